/*
 * an_err.c - descriptions of the error codes listed in an_err.h.
 */
#include "an_err.h"

const char *an_strerror(int code)
{
    switch ((an_err)code) {
    case AN_OK:
        return "success";
#define AN__ERR_TEXT(name, val, status, text) \
    case name:                                \
        return text;
    AN_ERRNO_MAP(AN__ERR_TEXT)
#undef AN__ERR_TEXT
    }
    return "unknown error";
}

const char *an_errname(int code)
{
    switch ((an_err)code) {
    case AN_OK:
        return "AN_OK";
#define AN__ERR_NAME(name, val, status, text) \
    case name:                                \
        return #name;
    AN_ERRNO_MAP(AN__ERR_NAME)
#undef AN__ERR_NAME
    }
    return "AN_E?";
}
