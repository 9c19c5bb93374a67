# cython: language_level=3
"""llhttp driven from compiled code, for the compiled data plane (setup.py).

The same parser httptools wraps, at the same version (vendor/llhttp, from the
httptools 0.9.0 source), behind the part of httptools' interface the data plane
uses: `feed_data`, `get_method`, `get_http_version`, `get_status_code`,
`should_keep_alive`, `set_dangerous_leniencies` and httptools' own exceptions,
raised in the same cases with the same messages.  The pure build keeps
httptools (http11.strict_request_parser chooses).

What differs is the calls into the data plane.  httptools enters Python for
each callback, about fifteen times a request, and the reader then calls its
getters.  Here a callback calls the reader's method through its C method table
(reading.pxd, response.pxd), and hands over at the end of the head what the
getters would have said (`head_parsed`).  A request field is handed over as
httptools does it (name and value, once the next field starts or the head
ends).  A response's fields are not handed over one by one at all: the response
parser gathers in C what response.py's `on_header` gathers from httptools
(HttpResponseParser, below).  A protocol that is not a reader (http11.verify_strict's
sink) gets no callbacks, only the parse errors.  aiohttp drives llhttp from its
own Cython the same way.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcmp, memcpy


from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidStatusError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
)

from proxy.dataplane.headers import HOP_BY_HOP
from proxy.dataplane.reading cimport RequestReader
from proxy.dataplane.response cimport ResponseReader


cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade
        uint16_t status_code

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char* at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_status
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_chunk_header
        llhttp_cb on_chunk_complete

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_INVALID_METHOD
        HPE_INVALID_URL
        HPE_INVALID_STATUS
        HPE_CB_MESSAGE_BEGIN
        HPE_CB_HEADERS_COMPLETE
        HPE_CB_MESSAGE_COMPLETE
        HPE_CB_CHUNK_HEADER
        HPE_CB_CHUNK_COMPLETE
        HPE_USER
        HPE_PAUSED_UPGRADE

    void llhttp_settings_init(llhttp_settings_t* settings)
    void llhttp_init(llhttp_t* parser, llhttp_type_t kind, const llhttp_settings_t* settings)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t size)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    void llhttp_set_error_reason(llhttp_t* parser, const char* reason)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    const char* llhttp_method_name(uint8_t method)
    void llhttp_set_lenient_headers(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_chunked_length(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_keep_alive(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_transfer_encoding(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_version(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_data_after_close(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_lf_after_cr(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_cr_before_lf(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_optional_crlf_after_chunk(llhttp_t* parser, int enabled)
    void llhttp_set_lenient_spaces_after_chunk_size(llhttp_t* parser, int enabled)


cdef int _set_leniency(llhttp_t* parser, str name, int enabled) except -1:
    if name == "lenient_headers":
        llhttp_set_lenient_headers(parser, enabled)
    elif name == "lenient_chunked_length":
        llhttp_set_lenient_chunked_length(parser, enabled)
    elif name == "lenient_keep_alive":
        llhttp_set_lenient_keep_alive(parser, enabled)
    elif name == "lenient_transfer_encoding":
        llhttp_set_lenient_transfer_encoding(parser, enabled)
    elif name == "lenient_version":
        llhttp_set_lenient_version(parser, enabled)
    elif name == "lenient_data_after_close":
        llhttp_set_lenient_data_after_close(parser, enabled)
    elif name == "lenient_optional_lf_after_cr":
        llhttp_set_lenient_optional_lf_after_cr(parser, enabled)
    elif name == "lenient_optional_cr_before_lf":
        llhttp_set_lenient_optional_cr_before_lf(parser, enabled)
    elif name == "lenient_optional_crlf_after_chunk":
        llhttp_set_lenient_optional_crlf_after_chunk(parser, enabled)
    elif name == "lenient_spaces_after_chunk_size":
        llhttp_set_lenient_spaces_after_chunk_size(parser, enabled)
    else:
        raise TypeError(f"unknown leniency {name!r}")
    return 0


cdef struct _Buffer:
    char* data
    Py_ssize_t size, capacity


cdef int _append(_Buffer* buf, const char* at, Py_ssize_t size) except -1:
    cdef Py_ssize_t need = buf.size + size, capacity
    cdef char* grown
    if need > buf.capacity:
        capacity = max(need, 2 * buf.capacity, 512)
        grown = <char*>PyMem_Realloc(buf.data, capacity)
        if grown == NULL:
            raise MemoryError()
        buf.data, buf.capacity = grown, capacity
    memcpy(buf.data + buf.size, at, size)
    buf.size = need
    return 0


cdef class _Parser:
    """What requests and responses share: llhttp's state, feeding it, the
    getters, and the error a callback raised."""

    cdef llhttp_t parser
    cdef object error  # what a callback raised, for the HttpParserCallbackError

    def set_dangerous_leniencies(self, **leniencies) -> None:
        for name, enabled in leniencies.items():
            if enabled is not None:
                _set_leniency(&self.parser, name, enabled)

    def get_http_version(self) -> str:
        return _version(&self.parser)

    def should_keep_alive(self) -> bool:
        return bool(llhttp_should_keep_alive(&self.parser))

    def feed_data(self, data) -> None:
        cdef Py_buffer view
        cdef llhttp_errno_t err
        cdef const char* start
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            start = <const char*>view.buf
            err = llhttp_execute(&self.parser, start, <size_t>view.len)
            if self.parser.upgrade == 1 and err == HPE_PAUSED_UPGRADE:
                # As httptools does: resume at once, and say where the rest begins.
                offset = llhttp_get_error_pos(&self.parser) - start
                llhttp_resume_after_upgrade(&self.parser)
                raise HttpParserUpgrade(offset)
        finally:
            PyBuffer_Release(&view)
        if err != HPE_OK:
            raise self._error(err)

    cdef _error(self, llhttp_errno_t err):
        reason = (<bytes>llhttp_get_error_reason(&self.parser)).decode("latin-1")
        if err in (HPE_CB_MESSAGE_BEGIN, HPE_CB_HEADERS_COMPLETE, HPE_CB_MESSAGE_COMPLETE,
                   HPE_CB_CHUNK_HEADER, HPE_CB_CHUNK_COMPLETE, HPE_USER):
            exc = HttpParserCallbackError(reason)
            if self.error is not None:
                exc.__context__ = self.error  # what the callback raised (reading.py reads it)
                self.error = None
            return exc
        if err == HPE_INVALID_STATUS:
            return HttpParserInvalidStatusError(reason)
        if err == HPE_INVALID_METHOD:
            return HttpParserInvalidMethodError(reason)
        if err == HPE_INVALID_URL:
            return HttpParserInvalidURLError(reason)
        return HttpParserError(reason)


cdef str _version(llhttp_t* parser):
    # httptools' get_http_version, without formatting the common two
    cdef uint8_t major = parser.http_major, minor = parser.http_minor
    if major == 1:
        return "1.1" if minor == 1 else "1.0" if minor == 0 else f"1.{minor}"
    return f"{major}.{minor}"


cdef class HttpRequestParser(_Parser):
    """Hands each field over as httptools does: name and value, once the next
    field starts or the head ends; a trailer field at the end of its chunk."""

    cdef RequestReader reader
    cdef bytes name, value  # the field being gathered (None: none yet)

    def __cinit__(self, protocol):
        # Any other protocol (http11.verify_strict's sink) gets no callbacks.
        self.reader = protocol if isinstance(protocol, RequestReader) else None
        llhttp_init(&self.parser, HTTP_REQUEST, &_REQUEST if self.reader else &_NONE)
        self.parser.data = <void*>self

    def get_method(self) -> bytes:
        return _method(self.parser.method)

    cdef int _flush_field(self) except -1:
        """Hand over the field gathered so far (httptools' _maybe_call_on_header)."""
        cdef bytes name, value
        if self.value is not None:
            name, value = self.name, self.value
            self.name = self.value = None
            self.reader.on_header(name, value)
        return 0


# llhttp's method names as bytes, made once each (get_method's answer).
cdef list _METHODS = [None] * 256


cdef bytes _method(uint8_t method):
    name = _METHODS[method]
    if name is None:
        name = _METHODS[method] = <bytes>llhttp_method_name(method)
    return name


cdef class HttpResponseParser(_Parser):
    """Gathers the head in C, the pass response.ResponseReader.on_header makes
    with httptools: the fields to pass on as one piece of `Name: value` lines,
    the hop-by-hop ones aside as (lower-case name, value), and whether one was
    Content-Length.  It then sets the reader's `reason`, `head`, `hop` and
    `length` as on_status and on_header would have, and calls `head_parsed`.
    Fields after the head (trailers) are dropped, as the pure build drops them:
    the head has gone out by then."""

    cdef ResponseReader reader
    cdef _Buffer fields, reason
    cdef Py_ssize_t field_at, value_at  # in `fields`: the open field's name, value (-1: none)
    cdef bint in_head, length
    cdef list hop
    cdef bytes last_reason
    cdef list last_hop  # by kind (_SORTED): the last value seen

    def __cinit__(self, protocol):
        self.reader = protocol if isinstance(protocol, ResponseReader) else None
        llhttp_init(&self.parser, HTTP_RESPONSE, &_RESPONSE if self.reader else &_NONE)
        self.parser.data = <void*>self
        self.field_at = self.value_at = -1
        self.last_hop = [None] * len(_SORTED)

    def __dealloc__(self):
        PyMem_Free(self.fields.data)
        PyMem_Free(self.reason.data)

    def get_status_code(self) -> int:
        return self.parser.status_code

    cdef int _begin(self) except -1:
        self.fields.size = self.reason.size = 0
        self.field_at = self.value_at = -1
        self.in_head = True
        self.length = False
        self.hop = None
        return 0

    cdef int _name(self, const char* at, size_t size) except -1:
        if self.in_head:
            if self.value_at >= 0:
                self._end_field()
            if self.field_at < 0:
                self.field_at = self.fields.size
            _append(&self.fields, at, size)
        return 0

    cdef int _value(self, const char* at, size_t size) except -1:
        if self.in_head:
            if self.value_at < 0:
                _append(&self.fields, b": ", 2)
                self.value_at = self.fields.size
            _append(&self.fields, at, size)
        return 0

    cdef int _end_field(self) except -1:
        cdef Py_ssize_t kind = _sorted(self.fields.data + self.field_at,
                                       self.value_at - 2 - self.field_at)
        if kind >= 0 and kind != _CONTENT_LENGTH:  # hop-by-hop: aside, and out of the head
            if self.hop is None:
                self.hop = []
            self.hop.append(((<tuple>_SORTED)[kind], self._hop_value(kind)))
            self.fields.size = self.field_at
        else:  # passed on
            if kind == _CONTENT_LENGTH:
                self.length = True
            _append(&self.fields, b"\r\n", 2)
        self.field_at = self.value_at = -1
        return 0

    cdef int _head_done(self) except -1:
        cdef ResponseReader reader = self.reader
        if self.value_at >= 0:
            self._end_field()
        self.in_head = False
        reader.reason = self._reason()
        reader.hop = tuple(self.hop) if self.hop is not None else ()
        reader.length = self.length
        if self.fields.size:
            reader.head.append(self.fields.data[:self.fields.size])
        reader.head_parsed(self.parser.status_code)
        return 0

    cdef bytes _hop_value(self, Py_ssize_t kind):
        # The value this kind of field had last time (Connection: keep-alive,
        # every response) is that object again, its hash kept: response.py
        # looks it up in a set.
        cdef const char* at = self.fields.data + self.value_at
        cdef Py_ssize_t size = self.fields.size - self.value_at
        cdef bytes last = <bytes>self.last_hop[kind]
        if last is None or PyBytes_GET_SIZE(last) != size or \
                memcmp(PyBytes_AS_STRING(last), at, size) != 0:
            last = at[:size]
            self.last_hop[kind] = last
        return last

    cdef bytes _reason(self):
        # The last reason again (an upstream sends the same few) is the same
        # object, hash included: response.py looks its status line up by it.
        cdef Py_ssize_t size = self.reason.size
        if size == 0:
            return b""
        if self.last_reason is None or len(self.last_reason) != size or \
                memcmp(<const char*>self.last_reason, self.reason.data, size) != 0:
            self.last_reason = self.reason.data[:size]
        return self.last_reason


# What response.ResponseReader.on_header sorts out, by name: the hop-by-hop fields,
# then Content-Length (the framing it forwards, noted).  In C for the search: most
# fields (Server, Date, Content-Type) have a length none of these has.
cdef tuple _SORTED = tuple(sorted(HOP_BY_HOP)) + (b"content-length",)
cdef Py_ssize_t _CONTENT_LENGTH = len(_SORTED) - 1
cdef enum:
    _LONGEST = 32
cdef const char* _SORTED_NAMES[16]
cdef Py_ssize_t _SORTED_SIZES[16]
cdef bint _SORTED_LENGTH[_LONGEST]  # whether any name in _SORTED is this long


cdef int _index_sorted() except -1:
    cdef Py_ssize_t i
    assert len(_SORTED) <= 16
    for i in range(len(_SORTED)):
        _SORTED_NAMES[i] = <bytes>_SORTED[i]  # the tuple keeps the bytes alive
        _SORTED_SIZES[i] = len(<bytes>_SORTED[i])
        assert _SORTED_SIZES[i] < _LONGEST
        _SORTED_LENGTH[_SORTED_SIZES[i]] = True
    return 0


_index_sorted()


cdef Py_ssize_t _sorted(const char* name, Py_ssize_t size) noexcept:
    """Which of _SORTED `name` is, in any case (-1: none)."""
    cdef Py_ssize_t i
    if size >= _LONGEST or not _SORTED_LENGTH[size]:
        return -1
    for i in range(_CONTENT_LENGTH + 1):
        if _SORTED_SIZES[i] == size and _same_lowered(name, _SORTED_NAMES[i], size):
            return i
    return -1


cdef bint _same_lowered(const char* name, const char* lower, Py_ssize_t size) noexcept:
    # ASCII case only, as bytes.lower(): strncasecmp follows the locale (in a
    # Turkish one, "I" is not "i" in lower case).
    cdef Py_ssize_t i
    cdef char c
    for i in range(size):
        c = name[i]
        if b'A' <= c <= b'Z':
            c = c | 0x20
        if c != lower[i]:
            return False
    return True


# -- llhttp's callbacks: each keeps what a callback raised for feed_data, as httptools
# does (a data callback with the reason httptools gives, the others as llhttp's own).

cdef int _failed(llhttp_t* parser, object exc, const char* reason) noexcept:
    (<_Parser>parser.data).error = exc
    if reason != NULL:
        llhttp_set_error_reason(parser, reason)
        return HPE_USER
    return -1


cdef inline RequestReader _request_reader(llhttp_t* parser):
    return (<HttpRequestParser>parser.data).reader


cdef int _on_request_begin(llhttp_t* parser) noexcept:
    try:
        _request_reader(parser).on_message_begin()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef int _on_url(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        _request_reader(parser).on_url(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_url` callback error")
    return 0


cdef int _on_request_field(llhttp_t* parser, const char* at, size_t size) noexcept:
    cdef HttpRequestParser self = <HttpRequestParser>parser.data
    try:
        self._flush_field()
        if self.name is None:
            self.name = at[:size]
        else:  # the name came in pieces: a read ended inside it
            self.name += at[:size]
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_field` callback error")
    return 0


cdef int _on_request_value(llhttp_t* parser, const char* at, size_t size) noexcept:
    cdef HttpRequestParser self = <HttpRequestParser>parser.data
    try:
        if self.value is None:
            self.value = at[:size]
        else:
            self.value += at[:size]
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_value` callback error")
    return 0


cdef int _on_request_head(llhttp_t* parser) noexcept:
    cdef HttpRequestParser self = <HttpRequestParser>parser.data
    try:
        self._flush_field()
        self.reader.head_parsed(_method(parser.method), _version(parser),
                                llhttp_should_keep_alive(parser))
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    # An upgrade: llhttp is to read no body, and pauses after the message.
    return 1 if parser.upgrade else 0


cdef int _on_request_body(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        _request_reader(parser).on_body(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_body` callback error")
    return 0


cdef int _on_request_complete(llhttp_t* parser) noexcept:
    try:
        _request_reader(parser).on_message_complete()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef int _on_chunk_header(llhttp_t* parser) noexcept:
    cdef HttpRequestParser self = <HttpRequestParser>parser.data
    if self.name is not None or self.value is not None:
        return _failed(parser, HttpParserError("invalid headers state"), NULL)
    return 0


cdef int _on_chunk_complete(llhttp_t* parser) noexcept:
    try:
        (<HttpRequestParser>parser.data)._flush_field()  # a trailer field, as httptools does
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


cdef int _on_response_begin(llhttp_t* parser) noexcept:
    (<HttpResponseParser>parser.data)._begin()  # cannot fail
    return 0


cdef int _on_status(llhttp_t* parser, const char* at, size_t size) noexcept:
    cdef HttpResponseParser self = <HttpResponseParser>parser.data
    try:
        if self.in_head:
            _append(&self.reason, at, size)
    except BaseException as exc:
        return _failed(parser, exc, "`on_status` callback error")
    return 0


cdef int _on_response_field(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<HttpResponseParser>parser.data)._name(at, size)
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_field` callback error")
    return 0


cdef int _on_response_value(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<HttpResponseParser>parser.data)._value(at, size)
    except BaseException as exc:
        return _failed(parser, exc, "`on_header_value` callback error")
    return 0


cdef int _on_response_head(llhttp_t* parser) noexcept:
    try:
        (<HttpResponseParser>parser.data)._head_done()
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 1 if parser.upgrade else 0


cdef int _on_response_body(llhttp_t* parser, const char* at, size_t size) noexcept:
    try:
        (<HttpResponseParser>parser.data).reader.on_body(at[:size])
    except BaseException as exc:
        return _failed(parser, exc, "`on_body` callback error")
    return 0


cdef int _on_response_complete(llhttp_t* parser) noexcept:
    try:
        (<HttpResponseParser>parser.data).reader.message_done(llhttp_should_keep_alive(parser))
    except BaseException as exc:
        return _failed(parser, exc, NULL)
    return 0


# The callbacks of each reader; _NONE: none, for a protocol that is not a reader.
cdef llhttp_settings_t _REQUEST, _RESPONSE, _NONE
llhttp_settings_init(&_REQUEST)
_REQUEST.on_message_begin = _on_request_begin
_REQUEST.on_url = _on_url
_REQUEST.on_header_field = _on_request_field
_REQUEST.on_header_value = _on_request_value
_REQUEST.on_headers_complete = _on_request_head
_REQUEST.on_body = _on_request_body
_REQUEST.on_message_complete = _on_request_complete
_REQUEST.on_chunk_header = _on_chunk_header
_REQUEST.on_chunk_complete = _on_chunk_complete
llhttp_settings_init(&_RESPONSE)
_RESPONSE.on_message_begin = _on_response_begin
_RESPONSE.on_status = _on_status
_RESPONSE.on_header_field = _on_response_field
_RESPONSE.on_header_value = _on_response_value
_RESPONSE.on_headers_complete = _on_response_head
_RESPONSE.on_body = _on_response_body
_RESPONSE.on_message_complete = _on_response_complete
llhttp_settings_init(&_NONE)
