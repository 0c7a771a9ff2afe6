/* The two per-frame loops of the codec, compiled.
 *
 * split_frames and pack_frames do exactly what their pure-Python twins in
 * framing/_codec.py do (the tests run both against each other); they exist
 * because at small frame sizes the per-frame Python bytecode, not the
 * copying, is what limits a server. Each frame is still its own bytes
 * object, so handlers see exactly what they would see without this module.
 * Built by the normal install when a C compiler is present; optional.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 4
#define MAX_DECLARABLE 0xFFFFFFFFULL

/* pack_frames status codes, mirrored in _codec.py */
#define PACKED_ALL 0
#define PACKED_UP_TO_LARGE 1
#define STOPPED_AT_OVERSIZED 2

static inline uint32_t read_header(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void write_header(unsigned char *p, uint32_t length)
{
    p[0] = (unsigned char)(length >> 24);
    p[1] = (unsigned char)(length >> 16);
    p[2] = (unsigned char)(length >> 8);
    p[3] = (unsigned char)length;
}

PyDoc_STRVAR(split_frames_doc,
"split_frames(buffer, start, end, limit) -> (frames, pos)\n\n"
"Complete frames in buffer[start:end] as a list of bytes, and the offset of\n"
"the first byte not consumed. Stops before an incomplete frame or a header\n"
"declaring more than `limit` bytes (which is left for the caller to judge).");

/* The Py_ssize_t argument `index` of a METH_FASTCALL function. */
static int
size_arg(PyObject *const *args, Py_ssize_t index, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(args[index]);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
arg_count(const char *function, Py_ssize_t nargs, Py_ssize_t wanted)
{
    if (nargs == wanted)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
                 function, wanted, nargs);
    return -1;
}

/* METH_FASTCALL, and the list allocated at its final size after a first walk
 * over the headers (which only reads 4 bytes per frame): at 32 small frames a
 * read, argument parsing and list growth cost as much as the copies. */
static PyObject *
split_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t start, end, limit;
    if (arg_count("split_frames", nargs, 4) < 0)
        return NULL;
    if (size_arg(args, 1, &start) < 0 || size_arg(args, 2, &end) < 0 || size_arg(args, 3, &limit) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (start < 0 || end > view.len || start > end || limit < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "split_frames: start/end out of range");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    /* pass 1: how many complete frames, and where they stop */
    Py_ssize_t pos = start, count = 0;
    while (end - pos >= HEADER_SIZE) {
        unsigned long long length = read_header(buf + pos);
        if (length > (unsigned long long)limit)
            break;
        if ((unsigned long long)(end - pos - HEADER_SIZE) < length)
            break;
        pos += HEADER_SIZE + (Py_ssize_t)length;
        count++;
    }
    Py_ssize_t stop = pos;
    PyObject *frames = PyList_New(count);
    if (frames == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* pass 2: one bytes object per payload */
    pos = start;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t length = (Py_ssize_t)read_header(buf + pos);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)buf + pos + HEADER_SIZE, length);
        if (payload == NULL) {
            Py_DECREF(frames);
            PyBuffer_Release(&view);
            return NULL;
        }
        PyList_SET_ITEM(frames, i, payload);
        pos += HEADER_SIZE + length;
    }
    PyBuffer_Release(&view);
    PyObject *offset = PyLong_FromSsize_t(stop);
    if (offset == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(frames);
        Py_DECREF(offset);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, frames);
    PyTuple_SET_ITEM(result, 1, offset);
    return result;
}

/* The length of one payload; for non-bytes objects `view` is filled and must
 * be released by the caller (view->obj != NULL). */
static Py_ssize_t
payload_length(PyObject *item, Py_buffer *view)
{
    view->obj = NULL;
    if (PyBytes_CheckExact(item))
        return PyBytes_GET_SIZE(item);
    if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0)
        return -1;
    return view->len;
}

PyDoc_STRVAR(pack_frames_doc,
"pack_frames(payloads, start, limit, large) -> (data, stop, status)\n\n"
"Header + payload for payloads[start:] in one bytes object. status 0: all\n"
"packed (stop == len). status 1: payloads[stop] is `large` bytes or more; its\n"
"header ends `data` and the payload itself is left to be written as it is.\n"
"status 2: payloads[stop] is over `limit` (or 2**32-1) and was not packed.");

static PyObject *
pack_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *sequence;
    Py_ssize_t start, limit, large;
    if (arg_count("pack_frames", nargs, 4) < 0)
        return NULL;
    sequence = args[0];
    if (size_arg(args, 1, &start) < 0 || size_arg(args, 2, &limit) < 0 || size_arg(args, 3, &large) < 0)
        return NULL;
    PyObject *fast = PySequence_Fast(sequence, "pack_frames: payloads must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    if (start < 0 || start > count) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "pack_frames: start out of range");
        return NULL;
    }

    /* pass 1: sizes, and where to stop */
    Py_ssize_t total = 0, stop = count;
    int status = PACKED_ALL;
    for (Py_ssize_t i = start; i < count; i++) {
        Py_buffer view;
        Py_ssize_t length = payload_length(items[i], &view);
        if (length < 0) {
            Py_DECREF(fast);
            return NULL;
        }
        if (view.obj != NULL)
            PyBuffer_Release(&view);
        if (length > limit || (unsigned long long)length > MAX_DECLARABLE) {
            stop = i;
            status = STOPPED_AT_OVERSIZED;
            break;
        }
        total += HEADER_SIZE;
        if (length >= large) {
            stop = i;
            status = PACKED_UP_TO_LARGE;
            break;
        }
        total += length;
    }

    /* pass 2: one allocation, one copy per payload */
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        Py_DECREF(fast);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char *limit_dst = dst + total;
    Py_ssize_t last = status == PACKED_UP_TO_LARGE ? stop + 1 : stop;
    for (Py_ssize_t i = start; i < last; i++) {
        Py_buffer view;
        Py_ssize_t length = payload_length(items[i], &view);
        if (length < 0)
            goto fail;
        const char *src = view.obj != NULL ? (const char *)view.buf : PyBytes_AS_STRING(items[i]);
        int header_only = (i == stop);
        Py_ssize_t need = HEADER_SIZE + (header_only ? 0 : length);
        if (dst + need > limit_dst) { /* a buffer changed size between passes */
            if (view.obj != NULL)
                PyBuffer_Release(&view);
            PyErr_SetString(PyExc_RuntimeError, "pack_frames: a payload changed size");
            goto fail;
        }
        write_header(dst, (uint32_t)length);
        dst += HEADER_SIZE;
        if (!header_only) {
            memcpy(dst, src, (size_t)length);
            dst += length;
        }
        if (view.obj != NULL)
            PyBuffer_Release(&view);
    }
    Py_DECREF(fast);
    PyObject *result = PyTuple_New(3);
    PyObject *stop_obj = PyLong_FromSsize_t(stop);
    PyObject *status_obj = PyLong_FromLong(status);
    if (result == NULL || stop_obj == NULL || status_obj == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(stop_obj);
        Py_XDECREF(status_obj);
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, out);
    PyTuple_SET_ITEM(result, 1, stop_obj);
    PyTuple_SET_ITEM(result, 2, status_obj);
    return result;

fail:
    Py_DECREF(out);
    Py_DECREF(fast);
    return NULL;
}

PyDoc_STRVAR(payload_buffer_doc,
"payload_buffer(size) -> bytearray\n\n"
"A bytearray of `size` bytes that is not zero-filled: the kernel is about to\n"
"overwrite all of it (recv_into), and it is handed out only once full.\n"
"bytearray(size) would write every byte once more (and fault every page in).");

static PyObject *
payload_buffer(PyObject *module, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "payload_buffer: negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

static PyMethodDef speedups_methods[] = {
    {"payload_buffer", payload_buffer, METH_O, payload_buffer_doc},
    {"split_frames", (PyCFunction)(void (*)(void))split_frames, METH_FASTCALL, split_frames_doc},
    {"pack_frames", (PyCFunction)(void (*)(void))pack_frames, METH_FASTCALL, pack_frames_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "framing._speedups",
    "Compiled twins of framing._codec's per-frame loops.",
    0,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
