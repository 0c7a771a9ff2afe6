/* The two per-frame loops of the codec, compiled.
 *
 * split_frames and pack_frames do exactly what their pure-Python twins in
 * framing/_codec.py do (the tests run both against each other); they exist
 * because at small frame sizes the per-frame Python bytecode, not the
 * copying, is what limits a server. split_frames makes each frame its own
 * bytes object; split_views lends read-only memoryviews of the receive
 * buffer instead (no copy, no malloc per frame), and buffer_exported tells
 * the decoder whether one of them is still alive before it reuses the memory.
 * Built by the normal install when a C compiler is present; optional.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
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

/* A size argument that must be 0 or more; `what` names it in the error. */
static int
nonnegative(PyObject *arg, const char *what, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(arg);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (*out < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be 0 or more", what);
        return -1;
    }
    return 0;
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

/* (frames, stop), the result of both splits; takes the reference to frames.
 * Built by hand: Py_BuildValue parses its format string on every call. */
static PyObject *
frames_and_stop(PyObject *frames, Py_ssize_t stop)
{
    PyObject *offset = PyLong_FromSsize_t(stop);
    PyObject *result = offset == NULL ? NULL : PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(frames);
        Py_XDECREF(offset);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, frames);
    PyTuple_SET_ITEM(result, 1, offset);
    return result;
}

PyDoc_STRVAR(split_views_doc,
"split_views(buffer, start, end, limit, min_view) -> (frames, pos)\n\n"
"As split_frames, but each payload of `min_view` bytes or more is a read-only\n"
"memoryview of `buffer` (bytes or bytearray): no copy. Shorter ones are bytes,\n"
"as a copy that small costs less than a view. All the views of one call share\n"
"one export of `buffer`, so its owner can tell (with buffer_exported) when the\n"
"last of them is gone; a call that lends none leaves no export behind.");

/* One slice of `base`: a new view on base's managed buffer (what slicing does
 * in Python), narrowed before anyone else can see it. base is 1-D, itemsize 1,
 * contiguous (made so by split_views), so offset and length are all it takes. */
static PyObject *
lend_slice(PyObject *base, Py_ssize_t offset, Py_ssize_t length)
{
    PyObject *slice = PyMemoryView_FromObject(base);
    if (slice == NULL)
        return NULL;
    Py_buffer *view = PyMemoryView_GET_BUFFER(slice);
    view->buf = (char *)view->buf + offset;
    view->len = length;
    view->shape[0] = length;
    return slice;
}

/* The read-only view of `buffer` the lent slices share, made on first need. */
static PyObject *
lending_base(PyObject *buffer)
{
    PyObject *base = PyMemoryView_FromObject(buffer);
    if (base == NULL)
        return NULL;
    Py_buffer *view = PyMemoryView_GET_BUFFER(base);
    if (view->ndim != 1 || view->itemsize != 1 || view->strides[0] != 1) {
        Py_DECREF(base);
        PyErr_SetString(PyExc_ValueError, "split_views: a contiguous byte buffer is required");
        return NULL;
    }
    view->readonly = 1; /* lent payloads must not write into the receive buffer */
    return base;
}

/* The loop of both splits over buffer[start:end] (already checked to be a
 * bytes-like object, and a bytes or bytearray when it lends): the list of
 * payloads, and in *stop the offset of the first byte not consumed. */
static PyObject *
cut(const char *name, PyObject *buffer, Py_ssize_t start, Py_ssize_t end, Py_ssize_t limit,
    Py_ssize_t min_view, Py_ssize_t *stop)
{
    Py_buffer whole;
    if (PyObject_GetBuffer(buffer, &whole, PyBUF_SIMPLE) < 0)
        return NULL;
    if (start < 0 || end > whole.len || start > end || limit < 0) {
        PyBuffer_Release(&whole);
        PyErr_Format(PyExc_ValueError, "%s: start/end out of range", name);
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)whole.buf;
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
    *stop = pos;
    PyObject *base = NULL;
    PyObject *frames = PyList_New(count);
    if (frames == NULL)
        goto fail;
    /* pass 2: one object per payload */
    pos = start;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t length = (Py_ssize_t)read_header(buf + pos);
        PyObject *payload;
        if (length >= min_view) {
            if (base == NULL && (base = lending_base(buffer)) == NULL)
                goto fail;
            payload = lend_slice(base, pos + HEADER_SIZE, length);
        }
        else {
            payload = PyBytes_FromStringAndSize((const char *)buf + pos + HEADER_SIZE, length);
        }
        if (payload == NULL)
            goto fail;
        PyList_SET_ITEM(frames, i, payload);
        pos += HEADER_SIZE + length;
    }
    Py_XDECREF(base); /* the slices hold its managed buffer, and so the export */
    PyBuffer_Release(&whole);
    return frames;

fail:
    Py_XDECREF(frames);
    Py_XDECREF(base);
    PyBuffer_Release(&whole);
    return NULL;
}

/* Both splits from Python: METH_FASTCALL, and the list allocated at its final
 * size after a first walk over the headers (which only reads 4 bytes per
 * frame): at 32 small frames a read, argument parsing and list growth cost as
 * much as the copies. A payload of min_view bytes or more is lent (a view),
 * a shorter one copied (bytes); split_frames lends none. */
static PyObject *
split(const char *name, PyObject *const *args, Py_ssize_t nargs, int lends)
{
    Py_ssize_t start, end, limit, min_view = PY_SSIZE_T_MAX, stop;
    if (arg_count(name, nargs, lends ? 5 : 4) < 0)
        return NULL;
    PyObject *buffer = args[0];
    if (lends && !PyBytes_CheckExact(buffer) && !PyByteArray_CheckExact(buffer)) {
        PyErr_Format(PyExc_TypeError, "%s: buffer must be bytes or a bytearray", name);
        return NULL;
    }
    if (size_arg(args, 1, &start) < 0 || size_arg(args, 2, &end) < 0 || size_arg(args, 3, &limit) < 0
        || (lends && size_arg(args, 4, &min_view) < 0))
        return NULL;
    PyObject *frames = cut(name, buffer, start, end, limit, min_view, &stop);
    return frames == NULL ? NULL : frames_and_stop(frames, stop);
}

static PyObject *
split_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return split("split_frames", args, nargs, 0);
}

static PyObject *
split_views(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return split("split_views", args, nargs, 1);
}

PyDoc_STRVAR(wire_region_doc,
"wire_region(payloads, limit) -> memoryview | None\n\n"
"If the payloads are views of one bytes/bytearray, each preceded there by its\n"
"own 4-byte header and each starting where the one before ended (what an\n"
"echo or a relay returns of the views split_views lent), the frames already\n"
"lie in that buffer as they go on the wire: a read-only view of that region,\n"
"to be written without packing a copy. None otherwise (or if one is over\n"
"`limit`); the caller then packs as usual.");

/* The start and size of the memory a view's owner exports (bytes, bytearray). */
static int
owner_memory(PyObject *owner, const char **start, Py_ssize_t *size)
{
    if (PyByteArray_CheckExact(owner)) {
        *start = PyByteArray_AS_STRING(owner);
        *size = PyByteArray_GET_SIZE(owner);
        return 1;
    }
    if (PyBytes_CheckExact(owner)) {
        *start = PyBytes_AS_STRING(owner);
        *size = PyBytes_GET_SIZE(owner);
        return 1;
    }
    return 0;
}

static PyObject *
wire_region(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    if (arg_count("wire_region", nargs, 2) < 0 || size_arg(args, 1, &limit) < 0)
        return NULL;
    PyObject *payloads = args[0];
    if (!PyList_CheckExact(payloads) && !PyTuple_CheckExact(payloads))
        Py_RETURN_NONE;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(payloads);
    PyObject **items = PySequence_Fast_ITEMS(payloads);
    if (count == 0 || !PyMemoryView_Check(items[0]))
        Py_RETURN_NONE; /* the common batch of bytes: one check */
    PyObject *owner = NULL;
    const char *low = NULL;
    Py_ssize_t size = 0, first = 0, next = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = items[i];
        Py_buffer view;
        if (!PyMemoryView_Check(item))
            Py_RETURN_NONE;
        if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear(); /* released, or not contiguous: packing says what is wrong */
            Py_RETURN_NONE;
        }
        /* held: the view (and so its owner) cannot go away or change size */
        PyObject *its_owner = PyMemoryView_GET_BASE(item);
        const char *at = (const char *)view.buf;
        Py_ssize_t length = view.len;
        PyBuffer_Release(&view);
        if (i == 0 && (its_owner == NULL || !owner_memory(its_owner, &low, &size)))
            Py_RETURN_NONE;
        if (i == 0)
            owner = its_owner;
        if (its_owner != owner || at < low + HEADER_SIZE || at > low + size)
            Py_RETURN_NONE;
        Py_ssize_t offset = at - low; /* a view of owner's memory: inside it */
        if (i == 0)
            first = next = offset - HEADER_SIZE;
        if (offset - HEADER_SIZE != next || length > size - offset || length > limit
            || read_header((const unsigned char *)low + next) != (uint64_t)length)
            Py_RETURN_NONE;
        next = offset + length;
    }
    PyObject *base = lending_base(owner);
    if (base == NULL)
        return NULL;
    PyObject *region = lend_slice(base, first, next - first);
    Py_DECREF(base);
    return region;
}

PyDoc_STRVAR(buffer_exported_doc,
"buffer_exported(buffer) -> bool\n\n"
"True while some memoryview (or other export) of the bytearray is alive: a\n"
"payload split_views lent from it, or a slice of one, still in use.");

static PyObject *
buffer_exported(PyObject *module, PyObject *arg)
{
    if (!PyByteArray_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "buffer_exported: a bytearray is required");
        return NULL;
    }
    return PyBool_FromLong(((PyByteArrayObject *)arg)->ob_exports > 0);
}

PyDoc_STRVAR(pack_frames_doc,
"pack_frames(payloads, start, limit, large) -> (data, stop, status)\n\n"
"Header + payload for payloads[start:] in one bytes object. status 0: all\n"
"packed (stop == len). status 1: payloads[stop] is `large` bytes or more; its\n"
"header ends `data` and the payload itself is left to be written as it is.\n"
"status 2: payloads[stop] is over `limit` (or 2**32-1) and was not packed.");

/* The buffers of the payloads that are not bytes, taken once in the first
 * pass and kept for the copy (a lent memoryview per frame is the common case
 * of the views path: asking twice would cost as much as the copy). */
typedef struct {
    Py_buffer *views; /* views[i - start], .obj == NULL for bytes */
    Py_ssize_t taken;
} held_views;

static void
release_views(held_views *held)
{
    if (held->views == NULL)
        return;
    for (Py_ssize_t i = 0; i < held->taken; i++)
        if (held->views[i].obj != NULL)
            PyBuffer_Release(&held->views[i]);
    PyMem_Free(held->views);
}

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
    held_views held = {NULL, 0};
    PyObject *out = NULL;

    /* pass 1: sizes, and where to stop; buffers of non-bytes payloads taken */
    Py_ssize_t total = 0, stop = count;
    int status = PACKED_ALL;
    for (Py_ssize_t i = start; i < count; i++) {
        PyObject *item = items[i];
        Py_ssize_t length;
        if (PyBytes_CheckExact(item)) {
            length = PyBytes_GET_SIZE(item);
        }
        else {
            if (held.views == NULL) {
                held.views = PyMem_Calloc((size_t)(count - start), sizeof(Py_buffer));
                if (held.views == NULL) {
                    PyErr_NoMemory();
                    goto fail;
                }
            }
            Py_buffer *view = &held.views[i - start];
            if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0) {
                view->obj = NULL;
                goto fail;
            }
            length = view->len;
        }
        held.taken = i - start + 1;
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
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto fail;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t last = status == PACKED_UP_TO_LARGE ? stop + 1 : stop;
    for (Py_ssize_t i = start; i < last; i++) {
        PyObject *item = items[i];
        const char *src;
        Py_ssize_t length;
        if (held.views != NULL && held.views[i - start].obj != NULL) {
            src = (const char *)held.views[i - start].buf;
            length = held.views[i - start].len;
        }
        else {
            src = PyBytes_AS_STRING(item);
            length = PyBytes_GET_SIZE(item);
        }
        write_header(dst, (uint32_t)length);
        dst += HEADER_SIZE;
        if (i != stop) {
            memcpy(dst, src, (size_t)length);
            dst += length;
        }
    }
    release_views(&held);
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
    Py_XDECREF(out);
    release_views(&held);
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
    Py_ssize_t size;
    if (nonnegative(arg, "payload_buffer: size", &size) < 0)
        return NULL;
    return PyByteArray_FromStringAndSize(NULL, size);
}

static PyMethodDef speedups_methods[] = {
    {"payload_buffer", payload_buffer, METH_O, payload_buffer_doc},
    {"split_frames", (PyCFunction)(void (*)(void))split_frames, METH_FASTCALL, split_frames_doc},
    {"pack_frames", (PyCFunction)(void (*)(void))pack_frames, METH_FASTCALL, pack_frames_doc},
    {"split_views", (PyCFunction)(void (*)(void))split_views, METH_FASTCALL, split_views_doc},
    {"buffer_exported", buffer_exported, METH_O, buffer_exported_doc},
    {"wire_region", (PyCFunction)(void (*)(void))wire_region, METH_FASTCALL, wire_region_doc},
    {NULL, NULL, 0, NULL},
};


/* ---- DecoderCore: FrameDecoder's per-read path --------------------------
 *
 * get_buffer() and buffer_updated() of framing.decoder.FrameDecoder, the two
 * calls the event loop makes per read, with the decoder's state in a struct;
 * FrameDecoder subclasses this type and keeps everything else in Python
 * (feed, end of stream, large and bad frames), which these two call back by
 * name when a read is not the common one: _leave_to_views() when a lent
 * payload is alive, _compact() when the buffer's tail is short, _parse() when
 * the read did not end at a frame boundary. Its pure twin is
 * decoder.PyDecoderCore; the tests run FrameDecoder on both. */

typedef struct {
    PyObject_HEAD
    PyObject *buf;        /* _buf: the receive buffer, a bytearray */
    PyObject *large;      /* _large: a large payload being received, or NULL/None */
    PyObject *failed;     /* failed: the error that ended decoding, or NULL/None */
    Py_ssize_t start;     /* _start: first unparsed byte */
    Py_ssize_t end;       /* _end: end of received bytes */
    Py_ssize_t small_limit; /* _small_limit: split stops before a frame over it */
    Py_ssize_t large_filled; /* _large_filled */
    Py_ssize_t frames_decoded;
    Py_ssize_t min_read;  /* _min_read: compact first if less room is left */
    Py_ssize_t view_min;  /* _view_min: the smallest payload lent as a view */
    char views;           /* views: lend payloads (split_views) */
    char ended_at_boundary;
} DecoderCore;

#define IS_SET(object) ((object) != NULL && (object) != Py_None)

static PyObject *
call_hook(PyObject *self, const char *name, PyObject *arg)
{
    PyObject *method = PyObject_GetAttrString(self, name);
    if (method == NULL)
        return NULL;
    PyObject *result = arg == NULL ? PyObject_CallNoArgs(method) : PyObject_CallOneArg(method, arg);
    Py_DECREF(method);
    return result;
}

/* memoryview(obj)[offset:], narrowed in place before anyone sees it. */
static PyObject *
view_from(PyObject *obj, Py_ssize_t offset)
{
    PyObject *room = PyMemoryView_FromObject(obj);
    if (room == NULL || offset == 0)
        return room;
    Py_buffer *view = PyMemoryView_GET_BUFFER(room);
    if (view->ndim != 1 || view->itemsize != 1 || offset < 0 || offset > view->len) {
        Py_DECREF(room);
        PyErr_SetString(PyExc_ValueError, "get_buffer: offset out of range");
        return NULL;
    }
    view->buf = (char *)view->buf + offset;
    view->len -= offset;
    view->shape[0] = view->len;
    return room;
}

/* Whether _buf is a bytearray (what the per-read path may index), else TypeError. */
static int
receive_buffer(DecoderCore *self, const char *caller)
{
    if (self->buf != NULL && PyByteArray_CheckExact(self->buf))
        return 1;
    PyErr_Format(PyExc_TypeError, "%s: the receive buffer must be a bytearray", caller);
    return 0;
}

PyDoc_STRVAR(core_get_buffer_doc,
"get_buffer(sizehint=-1) -> memoryview\n\n"
"Writable memory for the next read; pass the count to buffer_updated().");

static PyObject *
core_get_buffer(DecoderCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "get_buffer() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    if (IS_SET(self->failed)) {
        if (!PyExceptionInstance_Check(self->failed)) {
            PyErr_SetString(PyExc_TypeError, "get_buffer: failed must be an exception or None");
            return NULL;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(self->failed), self->failed);
        return NULL;
    }
    if (IS_SET(self->large))
        return view_from(self->large, self->large_filled);
    if (!receive_buffer(self, "get_buffer"))
        return NULL;
    if (self->views && ((PyByteArrayObject *)self->buf)->ob_exports > 0) { /* a lent payload is alive */
        PyObject *done = call_hook((PyObject *)self, "_leave_to_views", NULL);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
        if (!receive_buffer(self, "get_buffer")) /* the hook put a fresh one in */
            return NULL;
    }
    if (PyByteArray_GET_SIZE(self->buf) - self->end < self->min_read && self->start) {
        PyObject *done = call_hook((PyObject *)self, "_compact", NULL);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    return view_from(self->buf, self->end);
}

PyDoc_STRVAR(core_buffer_updated_doc,
"buffer_updated(nbytes) -> list\n\n"
"Account for `nbytes` written into get_buffer(); return finished payloads.");

static PyObject *
core_buffer_updated(DecoderCore *self, PyObject *arg)
{
    Py_ssize_t nbytes;
    if (nonnegative(arg, "buffer_updated: nbytes", &nbytes) < 0)
        return NULL;
    self->ended_at_boundary = 0;
    if (nbytes > PY_SSIZE_T_MAX - (IS_SET(self->large) ? self->large_filled : self->end)) {
        PyErr_SetString(PyExc_ValueError, "buffer_updated: start/end out of range");
        return NULL;
    }
    if (IS_SET(self->large)) {
        self->large_filled += nbytes;
        Py_ssize_t size = PyObject_Length(self->large);
        if (size < 0)
            return NULL;
        if (self->large_filled < size)
            return PyList_New(0);
        PyObject *payload = self->large;
        self->large = Py_NewRef(Py_None);
        self->frames_decoded += 1;
        PyObject *frames = PyList_New(1);
        if (frames == NULL) {
            Py_DECREF(payload);
            return NULL;
        }
        PyList_SET_ITEM(frames, 0, payload);
        return frames;
    }
    if (!receive_buffer(self, "buffer_updated"))
        return NULL;
    Py_ssize_t end = self->end + nbytes, stop = self->start;
    PyObject *frames;
    if (self->small_limit >= 0) { /* the common read: whole small frames, nothing left over */
        Py_ssize_t min_view = self->views ? self->view_min : PY_SSIZE_T_MAX;
        frames = cut("buffer_updated", self->buf, self->start, end, self->small_limit, min_view, &stop);
        if (frames == NULL)
            return NULL;
        if (stop == end) {
            self->start = self->end = 0;
            self->frames_decoded += PyList_GET_SIZE(frames);
            self->ended_at_boundary = 1;
            return frames;
        }
    }
    else if ((frames = PyList_New(0)) == NULL) {
        return NULL;
    }
    self->end = end;
    PyObject *position = PyLong_FromSsize_t(stop);
    PyObject *parse = position == NULL ? NULL : PyObject_GetAttrString((PyObject *)self, "_parse");
    PyObject *result = parse == NULL ? NULL : PyObject_CallFunctionObjArgs(parse, frames, position, NULL);
    Py_XDECREF(parse);
    Py_XDECREF(position);
    Py_DECREF(frames);
    return result;
}

static int
core_traverse(DecoderCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buf);
    Py_VISIT(self->large);
    Py_VISIT(self->failed);
    return 0;
}

static int
core_clear(DecoderCore *self)
{
    Py_CLEAR(self->buf);
    Py_CLEAR(self->large);
    Py_CLEAR(self->failed);
    return 0;
}

static void
core_dealloc(DecoderCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef core_members[] = {
    {"_buf", T_OBJECT_EX, offsetof(DecoderCore, buf), 0, NULL},
    {"_large", T_OBJECT, offsetof(DecoderCore, large), 0, NULL},
    {"failed", T_OBJECT, offsetof(DecoderCore, failed), 0,
     "the error that ended decoding (raised again by every later call)"},
    {"_start", T_PYSSIZET, offsetof(DecoderCore, start), 0, NULL},
    {"_end", T_PYSSIZET, offsetof(DecoderCore, end), 0, NULL},
    {"_small_limit", T_PYSSIZET, offsetof(DecoderCore, small_limit), 0, NULL},
    {"_large_filled", T_PYSSIZET, offsetof(DecoderCore, large_filled), 0, NULL},
    {"frames_decoded", T_PYSSIZET, offsetof(DecoderCore, frames_decoded), 0, NULL},
    {"_min_read", T_PYSSIZET, offsetof(DecoderCore, min_read), 0, NULL},
    {"_view_min", T_PYSSIZET, offsetof(DecoderCore, view_min), 0, NULL},
    {"views", T_BOOL, offsetof(DecoderCore, views), 0,
     "small payloads lent as read-only views of the receive buffer (no copy)"},
    {"ended_at_boundary", T_BOOL, offsetof(DecoderCore, ended_at_boundary), 0,
     "the last buffer_updated() ended at a frame boundary with no error"},
    {NULL},
};

static PyMethodDef core_methods[] = {
    {"get_buffer", (PyCFunction)(void (*)(void))core_get_buffer, METH_FASTCALL, core_get_buffer_doc},
    {"buffer_updated", (PyCFunction)core_buffer_updated, METH_O, core_buffer_updated_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "framing._speedups.DecoderCore",
    .tp_doc = PyDoc_STR("FrameDecoder's per-read path, compiled (see framing/decoder.py)."),
    .tp_basicsize = sizeof(DecoderCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_members = core_members,
    .tp_methods = core_methods,
};

static int
speedups_exec(PyObject *module)
{
    if (PyType_Ready(&DecoderCoreType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "DecoderCore", (PyObject *)&DecoderCoreType);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "framing._speedups",
    "Compiled twins of framing._codec's per-frame loops, and of the decoder's per-read path.",
    0,
    speedups_methods,
    speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
