/* msgpack for the common request and reply, compiled.
 *
 * At 64-byte messages msgpack.unpackb and Packer.pack cost more than the
 * whole framed echo of a message (most of it setting up their contexts and
 * options for every call). These functions do the same work for the shapes
 * a request/reply protocol sends (maps, arrays, strings, bins, integers,
 * floats, booleans, nil) and answer UNHANDLED for anything else: an ext
 * type, a non-str/bytes map key, invalid UTF-8, nesting deeper than
 * MAX_DEPTH, a truncated or trailing input, an integer past 64 bits, a type
 * they do not know. The caller then asks msgpack itself, which decides and
 * names the error, so these can never accept what msgpack refuses; for
 * everything they do accept, they give what msgpack gives (the tests compare
 * them with msgpack on arbitrary input). Optional, like _speedups.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* deeper than this is left to msgpack (its own limit is 1024 / 511) */
#define MAX_DEPTH 64
/* str map keys this short are kept in a small cache: a request's keys repeat */
#define KEY_CACHE_SIZE 128
#define KEY_CACHE_MAX_LENGTH 24

static PyObject *UNHANDLED; /* the sentinel; NULL + no error set inside means this */
static PyObject *key_cache[KEY_CACHE_SIZE];

/* ---------------------------------------------------------------- reading */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Reader;

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline uint64_t be64(const unsigned char *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

/* Take n bytes; NULL if the input has fewer. */
static inline const unsigned char *take(Reader *r, Py_ssize_t n)
{
    if (r->end - r->p < n)
        return NULL;
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

/* The length field of `size` bytes after the type byte (-1: truncated). */
static inline Py_ssize_t length_field(Reader *r, int size)
{
    const unsigned char *at = take(r, size);
    if (at == NULL)
        return -1;
    return size == 1 ? at[0] : size == 2 ? be16(at) : (Py_ssize_t)be32(at);
}

static inline unsigned int key_slot(const unsigned char *s, Py_ssize_t n)
{
    return (unsigned int)(n * 31 + s[0] * 7 + s[n - 1]) % KEY_CACHE_SIZE;
}

/* A str from UTF-8. Short ones come from a small cache when they were seen
 * before (a request's keys and op names repeat): equal, and immutable. */
static PyObject *make_str(const unsigned char *s, Py_ssize_t n, int is_key)
{
    if (n == 0 || n > KEY_CACHE_MAX_LENGTH)
        return PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    unsigned int slot = key_slot(s, n);
    PyObject *cached = key_cache[slot];
    if (cached != NULL && PyUnicode_GET_LENGTH(cached) == n &&
        memcmp(PyUnicode_DATA(cached), s, (size_t)n) == 0) {
        Py_INCREF(cached);
        return cached;
    }
    PyObject *key = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (key == NULL)
        return NULL;
    if (is_key)
        PyUnicode_InternInPlace(&key); /* as msgpack does with map keys */
    if (PyUnicode_IS_ASCII(key)) { /* then its data are these n bytes */
        Py_XSETREF(key_cache[slot], Py_NewRef(key));
    }
    return key;
}

static PyObject *read_value(Reader *r, int depth);

static PyObject *read_array(Reader *r, Py_ssize_t count, int depth)
{
    if (count > r->end - r->p) /* every element takes a byte at least */
        return NULL;
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = read_value(r, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* A map key: str or bin only (msgpack's strict_map_key); NULL for any other. */
static PyObject *read_key(Reader *r)
{
    const unsigned char *at = take(r, 1);
    if (at == NULL)
        return NULL;
    unsigned char tag = at[0];
    Py_ssize_t n;
    int is_str = 1;
    if (tag >= 0xA0 && tag <= 0xBF)
        n = tag & 0x1F;
    else if (tag == 0xD9 || tag == 0xDA || tag == 0xDB)
        n = length_field(r, tag == 0xD9 ? 1 : tag == 0xDA ? 2 : 4);
    else if (tag == 0xC4 || tag == 0xC5 || tag == 0xC6) {
        n = length_field(r, tag == 0xC4 ? 1 : tag == 0xC5 ? 2 : 4);
        is_str = 0;
    }
    else
        return NULL;
    if (n < 0 || (at = take(r, n)) == NULL)
        return NULL;
    return is_str ? make_str(at, n, 1) : PyBytes_FromStringAndSize((const char *)at, n);
}

static PyObject *read_map(Reader *r, Py_ssize_t count, int depth)
{
    if (count > (r->end - r->p) / 2) /* a key and a value take two bytes at least */
        return NULL;
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = read_key(r);
        if (key == NULL) {
            Py_DECREF(dict);
            return NULL;
        }
        PyObject *value = read_value(r, depth + 1);
        if (value == NULL || PyDict_SetItem(dict, key, value) < 0) {
            Py_DECREF(key);
            Py_XDECREF(value);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    return dict;
}

/* One msgpack value, or NULL (unhandled, or an error to clear). */
static PyObject *read_value(Reader *r, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    const unsigned char *at = take(r, 1);
    if (at == NULL)
        return NULL;
    unsigned char tag = at[0];
    if (tag < 0x80)
        return PyLong_FromLong(tag);
    if (tag >= 0xE0)
        return PyLong_FromLong((long)(signed char)tag);
    if (tag <= 0x8F)
        return read_map(r, tag & 0x0F, depth);
    if (tag <= 0x9F)
        return read_array(r, tag & 0x0F, depth);
    if (tag <= 0xBF) {
        Py_ssize_t n = tag & 0x1F;
        return (at = take(r, n)) == NULL ? NULL : make_str(at, n, 0);
    }
    Py_ssize_t n;
    switch (tag) {
    case 0xC0:
        Py_RETURN_NONE;
    case 0xC2:
        Py_RETURN_FALSE;
    case 0xC3:
        Py_RETURN_TRUE;
    case 0xC4: case 0xC5: case 0xC6:
        n = length_field(r, tag == 0xC4 ? 1 : tag == 0xC5 ? 2 : 4);
        if (n < 0 || (at = take(r, n)) == NULL)
            return NULL;
        return PyBytes_FromStringAndSize((const char *)at, n);
    case 0xCA:
        return (at = take(r, 4)) == NULL ? NULL : PyFloat_FromDouble(PyFloat_Unpack4((const char *)at, 0));
    case 0xCB:
        return (at = take(r, 8)) == NULL ? NULL : PyFloat_FromDouble(PyFloat_Unpack8((const char *)at, 0));
    case 0xCC:
        return (at = take(r, 1)) == NULL ? NULL : PyLong_FromLong(at[0]);
    case 0xCD:
        return (at = take(r, 2)) == NULL ? NULL : PyLong_FromLong(be16(at));
    case 0xCE:
        return (at = take(r, 4)) == NULL ? NULL : PyLong_FromUnsignedLong(be32(at));
    case 0xCF:
        return (at = take(r, 8)) == NULL ? NULL : PyLong_FromUnsignedLongLong(be64(at));
    case 0xD0:
        return (at = take(r, 1)) == NULL ? NULL : PyLong_FromLong((int8_t)at[0]);
    case 0xD1:
        return (at = take(r, 2)) == NULL ? NULL : PyLong_FromLong((int16_t)be16(at));
    case 0xD2:
        return (at = take(r, 4)) == NULL ? NULL : PyLong_FromLong((int32_t)be32(at));
    case 0xD3:
        return (at = take(r, 8)) == NULL ? NULL : PyLong_FromLongLong((int64_t)be64(at));
    case 0xD9: case 0xDA: case 0xDB:
        n = length_field(r, tag == 0xD9 ? 1 : tag == 0xDA ? 2 : 4);
        if (n < 0 || (at = take(r, n)) == NULL)
            return NULL;
        return make_str(at, n, 0);
    case 0xDC: case 0xDD:
        n = length_field(r, tag == 0xDC ? 2 : 4);
        return n < 0 ? NULL : read_array(r, n, depth);
    case 0xDE: case 0xDF:
        n = length_field(r, tag == 0xDE ? 2 : 4);
        return n < 0 ? NULL : read_map(r, n, depth);
    default: /* 0xC1 (never used), ext and fixext types: msgpack's */
        return NULL;
    }
}

/* The Py_ssize_t argument `index` of a METH_FASTCALL function. */
static int size_arg(PyObject *const *args, Py_ssize_t index, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(args[index]);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *unhandled(void)
{
    PyErr_Clear(); /* msgpack is asked next and raises whatever is due */
    return Py_NewRef(UNHANDLED);
}

PyDoc_STRVAR(unpack_doc,
"unpack(data) -> object or UNHANDLED\n\n"
"The one msgpack object in `data` (a bytes-like object), as\n"
"msgpack.unpackb(data) with its defaults gives it, or UNHANDLED when it is\n"
"not one this function decodes itself (then ask msgpack).");

static PyObject *unpack(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyBytes_CheckExact(data)) { /* the common frame: no buffer protocol round trip */
        Reader r = {(const unsigned char *)PyBytes_AS_STRING(data), NULL};
        r.end = r.p + PyBytes_GET_SIZE(data);
        PyObject *obj = read_value(&r, 0);
        if (obj != NULL && r.p == r.end)
            return obj;
        Py_XDECREF(obj);
        return unhandled();
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return unhandled();
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *obj = read_value(&r, 0);
    int whole = r.p == r.end;
    PyBuffer_Release(&view);
    if (obj != NULL && whole)
        return obj;
    Py_XDECREF(obj);
    return unhandled();
}

/* Where the scalar at r->p ends, skipping it (-1: a container, ext or truncated). */
static int skip_scalar(Reader *r)
{
    const unsigned char *at = take(r, 1);
    if (at == NULL)
        return -1;
    unsigned char tag = at[0];
    Py_ssize_t n;
    if (tag < 0x80 || tag >= 0xE0)
        return 0;
    if (tag >= 0xA0 && tag <= 0xBF)
        n = tag & 0x1F;
    else if (tag == 0xC0 || tag == 0xC2 || tag == 0xC3)
        n = 0;
    else if (tag == 0xCA || tag == 0xCE || tag == 0xD2)
        n = 4;
    else if (tag == 0xCB || tag == 0xCF || tag == 0xD3)
        n = 8;
    else if (tag == 0xCC || tag == 0xD0)
        n = 1;
    else if (tag == 0xCD || tag == 0xD1)
        n = 2;
    else if (tag == 0xC4 || tag == 0xD9)
        n = length_field(r, 1);
    else if (tag == 0xC5 || tag == 0xDA)
        n = length_field(r, 2);
    else if (tag == 0xC6 || tag == 0xDB)
        n = length_field(r, 4);
    else
        return -1;
    return n < 0 || take(r, n) == NULL ? -1 : 0;
}

/* The scalar at r->p, skipped: a bin of `min_bin` encoded bytes or more as a
 * slice of the read-only view *source (made over `owner` when still NULL),
 * its offset in *lent_at; any other scalar decoded, *lent_at = -1. NULL for
 * a container, an ext type, truncated input or an error. */
static PyObject *scalar_or_loan(Reader *r, const unsigned char *base, Py_ssize_t min_bin,
                                PyObject **source, PyObject *owner, Py_ssize_t *lent_at)
{
    const unsigned char *value_at = r->p;
    if (skip_scalar(r) < 0)
        return NULL;
    unsigned char tag = *value_at;
    *lent_at = -1;
    if (!((tag == 0xC4 || tag == 0xC5 || tag == 0xC6) && r->p - value_at >= min_bin)) {
        Reader scalar = {value_at, r->p};
        return read_value(&scalar, 1);
    }
    if (*source == NULL) {
        PyObject *writable = PyMemoryView_FromObject(owner);
        *source = writable == NULL ? NULL : PyObject_CallMethod(writable, "toreadonly", NULL);
        Py_XDECREF(writable);
        if (*source == NULL)
            return NULL;
    }
    Py_ssize_t start = (value_at - base) + (tag == 0xC4 ? 2 : tag == 0xC5 ? 3 : 5);
    *lent_at = start;
    return PySequence_GetSlice(*source, start, r->p - base);
}

PyDoc_STRVAR(unpack_lending_doc,
"unpack_lending(view, min_bin) -> (map, loans) or UNHANDLED\n\n"
"A top-level map of scalars in the read-only memoryview `view`, with every\n"
"bin value whose encoding takes `min_bin` bytes or more given as a slice of\n"
"`view` (no copy); `loans` lists (slice, offset of its first byte). Every\n"
"other value is decoded as unpack() does. UNHANDLED for any other shape.");

static PyObject *unpack_lending(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyMemoryView_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "unpack_lending(view: memoryview, min_bin: int)");
        return NULL;
    }
    Py_ssize_t min_bin = PyLong_AsSsize_t(args[1]);
    if (min_bin == -1 && PyErr_Occurred())
        return NULL;
    PyObject *source = args[0];
    Py_buffer view;
    if (PyObject_GetBuffer(source, &view, PyBUF_SIMPLE) < 0)
        return unhandled();
    const unsigned char *base = (const unsigned char *)view.buf;
    Reader r = {base, base + view.len};
    PyObject *map = NULL, *loans = NULL, *result = NULL;
    Py_ssize_t count;
    const unsigned char *at = take(&r, 1);
    if (at == NULL)
        goto done;
    if (at[0] >= 0x80 && at[0] <= 0x8F)
        count = at[0] & 0x0F;
    else if (at[0] == 0xDE || at[0] == 0xDF)
        count = length_field(&r, at[0] == 0xDE ? 2 : 4);
    else
        goto done;
    if (count < 0 || count > (r.end - r.p) / 2 || (map = PyDict_New()) == NULL ||
        (loans = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = read_key(&r), *value = NULL;
        if (key == NULL)
            goto done;
        Py_ssize_t start;
        value = scalar_or_loan(&r, base, min_bin, &source, NULL, &start);
        if (value != NULL && start >= 0) {
            PyObject *loan = Py_BuildValue("(On)", value, start);
            if (loan == NULL || PyList_Append(loans, loan) < 0) {
                Py_XDECREF(loan);
                Py_DECREF(value);
                Py_DECREF(key);
                goto done;
            }
            Py_DECREF(loan);
        }
        if (value == NULL || PyDict_SetItem(map, key, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(key);
            goto done;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    if (r.p == r.end)
        result = PyTuple_Pack(2, map, loans);
done:
    PyBuffer_Release(&view);
    Py_XDECREF(map);
    Py_XDECREF(loans);
    return result != NULL ? result : unhandled();
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    char inline_buf[256];
} Writer;

static int grow(Writer *w, Py_ssize_t need)
{
    Py_ssize_t cap = w->cap * 2;
    while (cap < w->len + need)
        cap *= 2;
    char *buf = w->buf == w->inline_buf ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(w->buf, (size_t)cap);
    if (buf == NULL)
        return -1;
    if (w->buf == w->inline_buf)
        memcpy(buf, w->inline_buf, (size_t)w->len);
    w->buf = buf;
    w->cap = cap;
    return 0;
}

static inline char *room(Writer *w, Py_ssize_t n)
{
    if (w->cap - w->len < n && grow(w, n) < 0)
        return NULL;
    char *at = w->buf + w->len;
    w->len += n;
    return at;
}

static inline void put_be(char *p, uint64_t v, int size)
{
    for (int i = size - 1; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

/* A type byte and a big-endian field of `size` bytes. */
static inline int put_tagged(Writer *w, unsigned char tag, uint64_t v, int size)
{
    char *p = room(w, 1 + size);
    if (p == NULL)
        return -1;
    p[0] = (char)tag;
    put_be(p + 1, v, size);
    return 0;
}

/* The header of a str, bin, array or map of n items: the smallest form. */
static inline int put_header(Writer *w, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_limit,
                      unsigned char tag8, unsigned char tag16, unsigned char tag32)
{
    if (n < fix_limit)
        return put_tagged(w, (unsigned char)(fix | n), 0, 0);
    if (tag8 && n < 0x100)
        return put_tagged(w, tag8, (uint64_t)n, 1);
    if (n < 0x10000)
        return put_tagged(w, tag16, (uint64_t)n, 2);
    if ((uint64_t)n <= 0xFFFFFFFFULL)
        return put_tagged(w, tag32, (uint64_t)n, 4);
    return -1; /* msgpack refuses it */
}

static inline int put_bytes(Writer *w, const char *s, Py_ssize_t n)
{
    char *p = room(w, n);
    if (p == NULL)
        return -1;
    memcpy(p, s, (size_t)n);
    return 0;
}

static int put_bin(Writer *w, const char *s, Py_ssize_t n)
{
    if (put_header(w, n, 0, 0, 0xC4, 0xC5, 0xC6) < 0)
        return -1;
    return put_bytes(w, s, n);
}

/* msgpack's integer forms: the smallest uint for n >= 0, the smallest int below. */
static int put_int(Writer *w, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred())
            return -1; /* past 64 bits: msgpack's OverflowError */
        return put_tagged(w, 0xCF, u, 8);
    }
    if (overflow < 0 || (v == -1 && PyErr_Occurred()))
        return -1;
    if (v >= 0) {
        if (v < 0x80)
            return put_tagged(w, (unsigned char)v, 0, 0);
        if (v < 0x100)
            return put_tagged(w, 0xCC, (uint64_t)v, 1);
        if (v < 0x10000)
            return put_tagged(w, 0xCD, (uint64_t)v, 2);
        if (v < 0x100000000LL)
            return put_tagged(w, 0xCE, (uint64_t)v, 4);
        return put_tagged(w, 0xCF, (uint64_t)v, 8);
    }
    if (v >= -32)
        return put_tagged(w, (unsigned char)(int8_t)v, 0, 0);
    if (v >= -0x80)
        return put_tagged(w, 0xD0, (uint64_t)v, 1);
    if (v >= -0x8000)
        return put_tagged(w, 0xD1, (uint64_t)v, 2);
    if (v >= -0x80000000LL)
        return put_tagged(w, 0xD2, (uint64_t)v, 4);
    return put_tagged(w, 0xD3, (uint64_t)v, 8);
}

static int put_value(Writer *w, PyObject *obj, int depth);

static int put_str(Writer *w, PyObject *obj)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
    if (s == NULL || put_header(w, n, 0xA0, 32, 0xD9, 0xDA, 0xDB) < 0)
        return -1;
    return put_bytes(w, s, n);
}

static int put_items(Writer *w, PyObject *const *items, Py_ssize_t n, int depth)
{
    if (put_header(w, n, 0x90, 16, 0, 0xDC, 0xDD) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (put_value(w, items[i], depth + 1) < 0)
            return -1;
    return 0;
}

/* The dict's entries; `last_value` 0 leaves out the last value (an envelope). */
static int put_map(Writer *w, PyObject *dict, int depth, int last_value)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict), pos = 0, i = 0;
    PyObject *key, *value;
    if (put_header(w, n, 0x80, 16, 0, 0xDE, 0xDF) < 0)
        return -1;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (put_value(w, key, depth + 1) < 0)
            return -1;
        if ((++i < n || last_value) && put_value(w, value, depth + 1) < 0)
            return -1;
    }
    return 0;
}

/* Only exact types: a subclass may pack differently (or not) in msgpack. */
static int put_value(Writer *w, PyObject *obj, int depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    PyTypeObject *type = Py_TYPE(obj);
    if (type == &PyUnicode_Type)
        return put_str(w, obj);
    if (type == &PyLong_Type)
        return put_int(w, obj);
    if (type == &PyBytes_Type)
        return put_bin(w, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj));
    if (type == &PyDict_Type)
        return put_map(w, obj, depth, 1);
    if (obj == Py_None)
        return put_tagged(w, 0xC0, 0, 0);
    if (obj == Py_True)
        return put_tagged(w, 0xC3, 0, 0);
    if (obj == Py_False)
        return put_tagged(w, 0xC2, 0, 0);
    if (type == &PyFloat_Type) {
        char *p = room(w, 9);
        if (p == NULL)
            return -1;
        p[0] = (char)0xCB;
        return PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), p + 1, 0);
    }
    if (type == &PyList_Type)
        return put_items(w, PySequence_Fast_ITEMS(obj), PyList_GET_SIZE(obj), depth);
    if (type == &PyTuple_Type)
        return put_items(w, PySequence_Fast_ITEMS(obj), PyTuple_GET_SIZE(obj), depth);
    if (type == &PyByteArray_Type)
        return put_bin(w, PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj));
    if (type == &PyMemoryView_Type) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return -1;
        int status = put_bin(w, (const char *)view.buf, view.len);
        PyBuffer_Release(&view);
        return status;
    }
    return -1;
}

static PyObject *finish(Writer *w, int status)
{
    PyObject *out = status < 0 ? NULL : PyBytes_FromStringAndSize(w->buf, w->len);
    if (w->buf != w->inline_buf)
        PyMem_Free(w->buf);
    return out != NULL ? out : unhandled();
}

#define WRITER_INIT(w) do { (w).buf = (w).inline_buf; (w).len = 0; (w).cap = sizeof((w).inline_buf); } while (0)

PyDoc_STRVAR(pack_doc,
"pack(obj) -> bytes or UNHANDLED\n\n"
"msgpack.Packer(use_bin_type=True).pack(obj), or UNHANDLED for an object\n"
"this function does not pack itself (then ask the Packer: it packs it or\n"
"raises what is due).");

static PyObject *pack(PyObject *module, PyObject *obj)
{
    Writer w;
    WRITER_INIT(w);
    return finish(&w, put_value(&w, obj, 0));
}

PyDoc_STRVAR(pack_envelope_doc,
"pack_envelope(reply, bin_length) -> bytes or UNHANDLED\n\n"
"The bytes of the non-empty dict `reply` packed up to its last value, then\n"
"the header of a bin of `bin_length` bytes: with that bin's bytes after it,\n"
"the whole reply, packed as pack() would.");

static PyObject *pack_envelope(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_CheckExact(args[0]) || PyDict_GET_SIZE(args[0]) == 0) {
        PyErr_SetString(PyExc_TypeError, "pack_envelope(reply: non-empty dict, bin_length: int)");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    if (length < 0)
        return PyErr_Occurred() ? NULL : unhandled();
    Writer w;
    WRITER_INIT(w);
    int status = put_map(&w, args[0], 0, 0);
    if (status == 0)
        status = put_header(&w, length, 0, 0, 0xC4, 0xC5, 0xC6);
    return finish(&w, status);
}


/* ------------------------------------------------------ a batch of requests */

#define MAX_FIELDS 16

/* A tuple of ASCII str keys as bytes, read once per call. */
typedef struct {
    Py_ssize_t count;
    const char *data[MAX_FIELDS];
    Py_ssize_t length[MAX_FIELDS];
} Keys;

static void keys_of(PyObject *fields, Keys *keys)
{
    keys->count = fields == Py_None ? 0 : PyTuple_GET_SIZE(fields);
    for (Py_ssize_t i = 0; i < keys->count; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        keys->data[i] = (const char *)PyUnicode_DATA(field);
        keys->length[i] = PyUnicode_GET_LENGTH(field);
    }
}

/* The values of a map whose keys are all among `keys` into values[] (NULL
 * where absent); 0, or -1 when the frame is anything else. */
static int read_fields(Reader *r, const Keys *keys, PyObject **values)
{
    Py_ssize_t count;
    const unsigned char *at = take(r, 1);
    if (at == NULL)
        return -1;
    if (at[0] >= 0x80 && at[0] <= 0x8F)
        count = at[0] & 0x0F;
    else if (at[0] == 0xDE || at[0] == 0xDF)
        count = length_field(r, at[0] == 0xDE ? 2 : 4);
    else
        return -1;
    if (count < 0 || count > (r->end - r->p) / 2)
        return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        at = take(r, 1);
        Py_ssize_t n = -1;
        if (at != NULL && at[0] >= 0xA0 && at[0] <= 0xBF)
            n = at[0] & 0x1F;
        else if (at != NULL && at[0] == 0xD9)
            n = length_field(r, 1);
        const unsigned char *key = n < 0 ? NULL : take(r, n);
        Py_ssize_t slot = -1;
        for (Py_ssize_t f = 0; key != NULL && f < keys->count; f++) {
            if (keys->length[f] == n && (n == 0 || keys->data[f][0] == (char)key[0]) &&
                memcmp(keys->data[f], key, (size_t)n) == 0) {
                slot = f;
                break;
            }
        }
        PyObject *value = slot < 0 ? NULL : read_value(r, 1);
        if (value == NULL)
            return -1;
        Py_XSETREF(values[slot], value); /* a repeated key: the last wins, as in a dict */
    }
    return r->p == r->end ? 0 : -1;
}

/* A reply tuple as the map of the reply keys to its values. */
static int put_fields(Writer *w, const Keys *keys, PyObject *values)
{
    Py_ssize_t n = PyTuple_GET_SIZE(values);
    if (put_header(w, n, 0x80, 16, 0, 0xDE, 0xDF) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t length = keys->length[i];
        if (put_header(w, length, 0xA0, 32, 0xD9, 0xDA, 0xDB) < 0 ||
            put_bytes(w, keys->data[i], length) < 0 ||
            put_value(w, PyTuple_GET_ITEM(values, i), 1) < 0)
            return -1;
    }
    return 0;
}

static int ascii_fields(PyObject *fields, const char *what)
{
    if (fields == Py_None)
        return 0;
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) > MAX_FIELDS) {
        PyErr_Format(PyExc_TypeError, "answer: %s must be None or a tuple of at most %d str", what, MAX_FIELDS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(fields, i)) ||
            !PyUnicode_IS_COMPACT_ASCII(PyTuple_GET_ITEM(fields, i))) {
            PyErr_Format(PyExc_TypeError, "answer: %s must be ASCII str", what);
            return -1;
        }
    return 0;
}

/* What became of one frame in answer(). */
enum { ANSWERED, NOT_TAKEN, LEFT, FAILED };

typedef struct {
    PyObject *fields, *handler, *out;
    Keys keys, reply_keys;
    Py_ssize_t nfields, nreply, small, limit, min_bin;
    Writer w;
} Batch;

/* The values of a large map (a bytearray frame) into values[], its bins of
 * min_bin encoded bytes or more as read-only views of the frame (also in
 * lent[], with their offsets); -1 for any other shape. */
static int read_lending(Batch *b, PyObject *frame, PyObject **values, PyObject **view,
                        PyObject **lent, Py_ssize_t *lent_at, int *nlent)
{
    const unsigned char *base = (const unsigned char *)PyByteArray_AS_STRING(frame);
    Reader r = {base, base + PyByteArray_GET_SIZE(frame)};
    Py_ssize_t count;
    const unsigned char *at = take(&r, 1);
    if (at == NULL)
        return -1;
    if (at[0] >= 0x80 && at[0] <= 0x8F)
        count = at[0] & 0x0F;
    else if (at[0] == 0xDE || at[0] == 0xDF)
        count = length_field(&r, at[0] == 0xDE ? 2 : 4);
    else
        return -1;
    if (count < 0 || count > MAX_FIELDS)
        return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        at = take(&r, 1);
        Py_ssize_t n = -1, slot = -1;
        if (at != NULL && at[0] >= 0xA0 && at[0] <= 0xBF)
            n = at[0] & 0x1F;
        const unsigned char *key = n < 0 ? NULL : take(&r, n);
        for (Py_ssize_t f = 0; key != NULL && f < b->keys.count; f++)
            if (b->keys.length[f] == n && memcmp(b->keys.data[f], key, (size_t)n) == 0) {
                slot = f;
                break;
            }
        if (slot < 0)
            return -1;
        Py_ssize_t start;
        PyObject *value = scalar_or_loan(&r, base, b->min_bin, view, frame, &start);
        if (value == NULL)
            return -1;
        if (start >= 0) {
            lent[*nlent] = Py_NewRef(value);
            lent_at[(*nlent)++] = start;
        }
        Py_XSETREF(values[slot], value);
    }
    return r.p == r.end ? 0 : -1;
}

/* A reply tuple whose last value is a view lent over the end of `frame`:
 * its envelope is written into the request bytes just before the view and
 * the reply is a view of the frame from there (no copy). 1 when done. */
static int reply_in_place(Batch *b, PyObject *frame, PyObject *reply, PyObject **lent,
                          Py_ssize_t *lent_at, int nlent)
{
    Py_ssize_t n = PyTuple_GET_SIZE(reply), size = PyByteArray_GET_SIZE(frame);
    PyObject *last = PyTuple_GET_ITEM(reply, n - 1);
    int k = 0;
    while (k < nlent && lent[k] != last)
        k++;
    if (k == nlent)
        return 0;
    Py_ssize_t length = PyObject_Length(last);
    if (length < 0 || lent_at[k] + length != size) {
        PyErr_Clear();
        return 0;
    }
    Writer *w = &b->w;
    w->len = 0;
    if (put_header(w, n, 0x80, 16, 0, 0xDE, 0xDF) < 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t key_length = b->reply_keys.length[i];
        if (put_header(w, key_length, 0xA0, 32, 0xD9, 0xDA, 0xDB) < 0 ||
            put_bytes(w, b->reply_keys.data[i], key_length) < 0 ||
            (i < n - 1 && put_value(w, PyTuple_GET_ITEM(reply, i), 1) < 0))
            return 0;
    }
    if (put_header(w, length, 0, 0, 0xC4, 0xC5, 0xC6) < 0)
        return 0;
    Py_ssize_t begin = lent_at[k] - w->len;
    if (begin < 0 || size - begin > b->limit)
        return 0;
    for (int j = 0; j < nlent; j++) /* another view must not read the bytes overwritten */
        if (lent[j] != last && lent_at[j] + PyObject_Length(lent[j]) > begin)
            return 0;
    PyObject *whole = PyMemoryView_FromObject(frame);
    PyObject *tail = whole == NULL ? NULL : PySequence_GetSlice(whole, begin, size);
    Py_XDECREF(whole);
    if (tail == NULL)
        return 0;
    memcpy(PyByteArray_AS_STRING(frame) + begin, w->buf, (size_t)w->len);
    int appended = PyList_Append(b->out, tail);
    Py_DECREF(tail);
    return appended < 0 ? -1 : 1;
}

static int answer_frame(Batch *b, PyObject *frame, PyObject **left)
{
    /* slot 0 is free for the callee (PY_VECTORCALL_ARGUMENTS_OFFSET): a bound
     * method puts its self there instead of copying the arguments */
    PyObject *slots[MAX_FIELDS + 1] = {NULL}, **values = slots + 1, *view = NULL, *lent[MAX_FIELDS];
    Py_ssize_t lent_at[MAX_FIELDS];
    int nlent = 0, ok, status = ANSWERED;
    Py_ssize_t nfields = b->nfields;
    if (PyBytes_CheckExact(frame) && PyBytes_GET_SIZE(frame) < b->small) {
        Reader r = {(const unsigned char *)PyBytes_AS_STRING(frame), NULL};
        r.end = r.p + PyBytes_GET_SIZE(frame);
        if (b->fields == Py_None) {
            values[0] = read_value(&r, 0);
            ok = values[0] != NULL && r.p == r.end;
        }
        else
            ok = read_fields(&r, &b->keys, values) == 0;
    }
    else if (PyByteArray_CheckExact(frame) && b->fields != Py_None && b->nreply > 0 &&
             PyByteArray_GET_SIZE(frame) >= b->small && PyByteArray_GET_SIZE(frame) <= b->limit)
        ok = read_lending(b, frame, values, &view, lent, lent_at, &nlent) == 0;
    else
        return NOT_TAKEN;
    for (Py_ssize_t f = 0; ok && f < nfields; f++)
        if (values[f] == NULL)
            values[f] = Py_NewRef(Py_None);
    PyObject *reply = NULL;
    if (ok) {
        Py_INCREF(frame); /* the handler may drop the list's reference */
        reply = PyObject_Vectorcall(b->handler, values, (size_t)nfields | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    for (Py_ssize_t f = 0; f < nfields; f++)
        Py_XDECREF(values[f]);
    if (!ok) {
        PyErr_Clear(); /* the caller asks msgpack, which says what is wrong */
        status = NOT_TAKEN;
    }
    else if (reply == NULL)
        status = FAILED;
    else if (reply != Py_None) {
        int is_fields = PyTuple_CheckExact(reply) && PyTuple_GET_SIZE(reply) == b->nreply;
        int placed = is_fields && nlent ? reply_in_place(b, frame, reply, lent, lent_at, nlent) : 0;
        if (placed < 0)
            status = FAILED;
        else if (placed == 0) {
            Writer *w = &b->w;
            w->len = 0;
            int packed = is_fields ? put_fields(w, &b->reply_keys, reply) : put_value(w, reply, 0);
            PyObject *data = packed < 0 || w->len > b->limit ? NULL : PyBytes_FromStringAndSize(w->buf, w->len);
            if (data == NULL) {
                PyErr_Clear(); /* the caller packs it, or names why it cannot be sent */
                *left = Py_NewRef(reply);
                status = LEFT;
            }
            else {
                status = PyList_Append(b->out, data) < 0 ? FAILED : ANSWERED;
                Py_DECREF(data);
            }
        }
    }
    if (ok)
        Py_DECREF(frame);
    Py_XDECREF(reply);
    for (int j = 0; j < nlent; j++)
        Py_DECREF(lent[j]);
    Py_XDECREF(view);
    return status;
}

PyDoc_STRVAR(answer_doc,
"answer(frames, start, fields, handler, reply_fields, small, limit, min_bin, out)\n"
"  -> (stop, reply)\n\n"
"Answers frames[start:] in order while each is a bytes frame under `small`\n"
"bytes this module decodes: handler(*values) for a map whose keys are all\n"
"among the tuple `fields` (values in that order, None where absent), or\n"
"handler(obj) when `fields` is None. A reply of None sends nothing; a tuple\n"
"as long as the tuple `reply_fields` is the map of those keys to its values;\n"
"anything else is the reply itself. Each packed reply of at most `limit`\n"
"bytes is appended to the list `out`. With `fields`, a bytearray frame of\n"
"`small` bytes or more holding a map of scalars is answered too, its bins\n"
"of `min_bin` encoded bytes or more lent as read-only views, and a reply\n"
"tuple ending with such a view over the frame's end is written in place\n"
"(appended as a view of the frame). Stops at the first frame it cannot\n"
"answer so: (stop, UNHANDLED) when the handler was not called for\n"
"frames[stop], (stop, reply) when its reply is left to the caller to pack;\n"
"(len(frames), UNHANDLED) when all are answered. The handler's exceptions\n"
"propagate.");

static PyObject *answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[8])) {
        PyErr_SetString(PyExc_TypeError, "answer(frames: list, start, fields, handler, "
                                         "reply_fields, small, limit, min_bin, out: list)");
        return NULL;
    }
    Batch b;
    PyObject *frames = args[0], *reply_fields = args[4];
    Py_ssize_t start;
    b.fields = args[2];
    b.handler = args[3];
    b.out = args[8];
    if (size_arg(args, 1, &start) < 0 || size_arg(args, 5, &b.small) < 0 ||
        size_arg(args, 6, &b.limit) < 0 || size_arg(args, 7, &b.min_bin) < 0)
        return NULL;
    if (ascii_fields(b.fields, "fields") < 0 || ascii_fields(reply_fields, "reply_fields") < 0)
        return NULL;
    keys_of(b.fields, &b.keys);
    keys_of(reply_fields, &b.reply_keys);
    b.nfields = b.fields == Py_None ? 1 : b.keys.count;
    b.nreply = reply_fields == Py_None ? -1 : b.reply_keys.count;
    WRITER_INIT(b.w);
    PyObject *left = NULL; /* a reply left to the caller */
    Py_ssize_t i = start < 0 ? 0 : start;
    int status = ANSWERED;
    for (; i < PyList_GET_SIZE(frames); i++) {
        status = answer_frame(&b, PyList_GET_ITEM(frames, i), &left);
        if (status != ANSWERED)
            break;
    }
    if (b.w.buf != b.w.inline_buf)
        PyMem_Free(b.w.buf);
    if (status == FAILED)
        return NULL;
    PyObject *result = Py_BuildValue("(nO)", i, left != NULL ? left : UNHANDLED);
    Py_XDECREF(left);
    return result;
}

/* ----------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"unpack", (PyCFunction)unpack, METH_O, unpack_doc},
    {"unpack_lending", (PyCFunction)(void (*)(void))unpack_lending, METH_FASTCALL, unpack_lending_doc},
    {"pack", (PyCFunction)pack, METH_O, pack_doc},
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL, answer_doc},
    {"pack_envelope", (PyCFunction)(void (*)(void))pack_envelope, METH_FASTCALL, pack_envelope_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "framing._msgpack_speedups",
    "msgpack for the common request and reply, compiled (see framing/_msgpack_codec.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__msgpack_speedups(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (UNHANDLED == NULL) {
        UNHANDLED = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (UNHANDLED == NULL) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddObjectRef(module, "UNHANDLED", UNHANDLED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
