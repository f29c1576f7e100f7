/* The compiled SRTP path: protect and sendto in one call, no Python object per packet; and
 * unprotect of what a transport receives without pylibsrtp's buffer copies.
 *
 * sfu.rtc.fastpath wraps this module (and falls back to the pure-Python path without it).
 * One OutboundSrtp is the outgoing SRTP session of one DTLS transport, created from the same
 * keying material aiortc derives for its own (pylibsrtp) session; its output is byte for
 * byte what pylibsrtp's protect() gives for the same key and packets
 * (tests/unit/test_fastpath.py).
 *
 *   OutboundSrtp(profile, key)       profile: libsrtp's srtp_profile_t (pylibsrtp's
 *                                    Policy.SRTP_PROFILE_* have the same values); key: master
 *                                    key + salt
 *   .protect(packet) -> bytes        SRTP of one plain RTP packet
 *   .send(fd, packet, sockaddr[, ext_id, transport_seq]) -> int
 *                                    protect and sendto(fd, sockaddr); with ext_id (1..14),
 *                                    first insert the transport-wide sequence number in a new
 *                                    one-byte header extension (the packet has a plain 12-byte
 *                                    header), as sfu.media.rtp.with_transport_seq does. Returns
 *                                    the plain length sent, or -1 (nothing sent).
 *   InboundSrtp(profile, key)        the incoming session of a transport, with
 *   .unprotect(packet), .unprotect_rtcp(packet) -> bytes   (SrtpError when refused: failed
 *                                    authentication, replay), as pylibsrtp's do
 *   sockaddr(host, port) -> bytes    a packed sockaddr_in / sockaddr_in6 for send()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <srtp2/srtp.h>

#include "_media.h"

#define MAX_PACKET 1500
#define TRAILER_ROOM (SRTP_MAX_TRAILER_LEN + 16)

typedef struct {
    PyObject_HEAD
    srtp_t session;
} OutboundSrtp;

/* InboundSrtp has the same layout: one session, for what a transport receives. */
typedef OutboundSrtp InboundSrtp;

static PyObject *SrtpError; /* sfu.rtc._fastpath.SrtpError: a packet refused by unprotect */

static int srtp_ready = 0;

static int ensure_srtp_init(void)
{
    if (!srtp_ready) {
        if (srtp_init() != srtp_err_status_ok) {
            PyErr_SetString(PyExc_RuntimeError, "srtp_init failed");
            return -1;
        }
        srtp_ready = 1;
    }
    return 0;
}

static int session_init(OutboundSrtp *self, PyObject *args, srtp_ssrc_type_t direction)
{
    int profile;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "iy*", &profile, &key))
        return -1;
    if (ensure_srtp_init() < 0) {
        PyBuffer_Release(&key);
        return -1;
    }
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    if (srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile) != srtp_err_status_ok ||
        srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile) != srtp_err_status_ok) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "unsupported SRTP profile %d", profile);
        return -1;
    }
    size_t need = srtp_profile_get_master_key_length((srtp_profile_t)profile) +
                  srtp_profile_get_master_salt_length((srtp_profile_t)profile);
    if ((size_t)key.len != need) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "SRTP key and salt must be %zu bytes", need);
        return -1;
    }
    unsigned char keybuf[64];
    memcpy(keybuf, key.buf, key.len);
    PyBuffer_Release(&key);
    policy.ssrc.type = direction;
    policy.key = keybuf;
    policy.window_size = 1024;
    policy.allow_repeat_tx = 1;
    policy.next = NULL;
    if (self->session != NULL) {
        srtp_dealloc(self->session);
        self->session = NULL;
    }
    srtp_err_status_t err = srtp_create(&self->session, &policy);
    memset(keybuf, 0, sizeof(keybuf));
    if (err != srtp_err_status_ok) {
        self->session = NULL;
        PyErr_Format(PyExc_RuntimeError, "srtp_create failed (%d)", (int)err);
        return -1;
    }
    return 0;
}

static int OutboundSrtp_init(OutboundSrtp *self, PyObject *args, PyObject *kwds)
{
    return session_init(self, args, ssrc_any_outbound);
}

static int InboundSrtp_init(InboundSrtp *self, PyObject *args, PyObject *kwds)
{
    return session_init(self, args, ssrc_any_inbound);
}

static void OutboundSrtp_dealloc(OutboundSrtp *self)
{
    if (self->session != NULL)
        srtp_dealloc(self->session);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Copy the packet into buf (with the transport-wide sequence number inserted when ext_id > 0)
 * and protect it there; returns the protected length, or -1 with no exception set. */
static int build_and_protect(OutboundSrtp *self, const unsigned char *data, Py_ssize_t len, int ext_id, int tw_seq,
                             unsigned char *buf, Py_ssize_t *plain_len)
{
    Py_ssize_t n;
    if (len < 12 || self->session == NULL)
        return -1;
    if (ext_id > 0) {
        if (len + 8 > MAX_PACKET || (data[0] & 0x1F) != 0)
            return -1; /* only plain 12-byte headers get the extension */
        buf[0] = data[0] | 0x10;
        memcpy(buf + 1, data + 1, 11);
        buf[12] = 0xBE;
        buf[13] = 0xDE;
        buf[14] = 0;
        buf[15] = 1;
        buf[16] = (unsigned char)((ext_id << 4) | 1);
        buf[17] = (unsigned char)((tw_seq >> 8) & 0xFF);
        buf[18] = (unsigned char)(tw_seq & 0xFF);
        buf[19] = 0;
        memcpy(buf + 20, data + 12, len - 12);
        n = len + 8;
    } else {
        if (len > MAX_PACKET)
            return -1;
        memcpy(buf, data, len);
        n = len;
    }
    *plain_len = n;
    int out_len = (int)n;
    if (srtp_protect(self->session, buf, &out_len) != srtp_err_status_ok)
        return -1;
    return out_len;
}

static PyObject *OutboundSrtp_protect(OutboundSrtp *self, PyObject *arg)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char buf[MAX_PACKET + 8 + TRAILER_ROOM];
    Py_ssize_t plain;
    int n = build_and_protect(self, packet.buf, packet.len, 0, 0, buf, &plain);
    PyBuffer_Release(&packet);
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "SRTP protect failed");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, n);
}

static PyObject *OutboundSrtp_send(OutboundSrtp *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send(fd, packet, sockaddr[, ext_id, transport_seq])");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    int ext_id = 0, tw_seq = 0;
    if (nargs == 5) {
        ext_id = (int)PyLong_AsLong(args[3]);
        tw_seq = (int)PyLong_AsLong(args[4]);
        if (PyErr_Occurred())
            return NULL;
        if (ext_id < 1 || ext_id > 14) {
            PyErr_SetString(PyExc_ValueError, "ext_id must be 1..14");
            return NULL;
        }
    }
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "packet and sockaddr must be bytes");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[1]);
    const char *addr = PyBytes_AS_STRING(args[2]);
    Py_ssize_t addr_len = PyBytes_GET_SIZE(args[2]);
    unsigned char buf[MAX_PACKET + 8 + TRAILER_ROOM];
    Py_ssize_t plain;
    int n = build_and_protect(self, data, len, ext_id, tw_seq, buf, &plain);
    if (n < 0)
        return PyLong_FromLong(-1);
    ssize_t sent;
    do {
        sent = sendto(fd, buf, (size_t)n, 0, (const struct sockaddr *)addr, (socklen_t)addr_len);
    } while (sent < 0 && errno == EINTR);
    return PyLong_FromSsize_t(sent < 0 ? -1 : plain);
}

static PyMethodDef OutboundSrtp_methods[] = {
    {"protect", (PyCFunction)OutboundSrtp_protect, METH_O, "SRTP of one plain RTP packet."},
    {"send", (PyCFunction)(void (*)(void))OutboundSrtp_send, METH_FASTCALL,
     "send(fd, packet, sockaddr[, ext_id, transport_seq]) -> plain length sent, or -1."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OutboundSrtpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.OutboundSrtp",
    .tp_basicsize = sizeof(OutboundSrtp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The outgoing SRTP session of one transport (libsrtp2).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)OutboundSrtp_init,
    .tp_dealloc = (destructor)OutboundSrtp_dealloc,
    .tp_methods = OutboundSrtp_methods,
};

/* Unprotect one SRTP (rtcp = 0) or SRTCP packet; SrtpError if it is refused. */
static PyObject *unprotect(InboundSrtp *self, PyObject *arg, int rtcp)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char buf[MAX_PACKET + TRAILER_ROOM];
    if (packet.len < (rtcp ? 8 : 12) || packet.len > (Py_ssize_t)sizeof(buf)) {
        PyBuffer_Release(&packet);
        PyErr_SetString(SrtpError, "packet too short or too long");
        return NULL;
    }
    memcpy(buf, packet.buf, packet.len);
    int len = (int)packet.len;
    PyBuffer_Release(&packet);
    srtp_err_status_t err = rtcp ? srtp_unprotect_rtcp(self->session, buf, &len) : srtp_unprotect(self->session, buf, &len);
    if (err != srtp_err_status_ok) {
        PyErr_Format(SrtpError, "SRTP unprotect failed (%d)", (int)err);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, len);
}

static PyObject *InboundSrtp_unprotect(InboundSrtp *self, PyObject *arg)
{
    return unprotect(self, arg, 0);
}

static PyObject *InboundSrtp_unprotect_rtcp(InboundSrtp *self, PyObject *arg)
{
    return unprotect(self, arg, 1);
}

static PyMethodDef InboundSrtp_methods[] = {
    {"unprotect", (PyCFunction)InboundSrtp_unprotect, METH_O, "The plain RTP packet, or SrtpError."},
    {"unprotect_rtcp", (PyCFunction)InboundSrtp_unprotect_rtcp, METH_O, "The plain RTCP packet, or SrtpError."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject InboundSrtpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.rtc._fastpath.InboundSrtp",
    .tp_basicsize = sizeof(InboundSrtp),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The incoming SRTP session of one transport (libsrtp2).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)InboundSrtp_init,
    .tp_dealloc = (destructor)OutboundSrtp_dealloc,
    .tp_methods = InboundSrtp_methods,
};

static PyObject *make_sockaddr(PyObject *module, PyObject *args)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    memset(&v4, 0, sizeof(v4));
    memset(&v6, 0, sizeof(v6));
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof(v4));
    }
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof(v6));
    }
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"sockaddr", make_sockaddr, METH_VARARGS, "sockaddr(host, port) -> packed sockaddr for OutboundSrtp.send"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "sfu.rtc._fastpath", "SRTP protect + sendto in one call (libsrtp2).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&OutboundSrtpType) < 0 || PyType_Ready(&InboundSrtpType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&OutboundSrtpType);
    if (PyModule_AddObject(m, "OutboundSrtp", (PyObject *)&OutboundSrtpType) < 0) {
        Py_DECREF(&OutboundSrtpType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&InboundSrtpType);
    if (PyModule_AddObject(m, "InboundSrtp", (PyObject *)&InboundSrtpType) < 0) {
        Py_DECREF(&InboundSrtpType);
        Py_DECREF(m);
        return NULL;
    }
    SrtpError = PyErr_NewException("sfu.rtc._fastpath.SrtpError", PyExc_ValueError, NULL);
    if (SrtpError == NULL || PyModule_AddObject(m, "SrtpError", SrtpError) < 0) {
        Py_XDECREF(SrtpError);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(SrtpError);
    PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET);
    if (media_add_types(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
