package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/bootorbit/bootorbit/groundd"
)

// Error codes of the API's error documents, one per kind of failure a
// client may act on.
const (
	CodeBadRequest   = "bad_request"            // 400: the request is malformed or a value is invalid
	CodeUnauthorized = "unauthorized"           // 401: no or wrong bearer token
	CodeForbidden    = "forbidden"              // 403: Host is not a loopback name on a server without a token, or a cross-origin browser request that changes state
	CodeNotFound     = "not_found"              // 404: no such path, uplink, vehicle or command
	CodeMethod       = "method_not_allowed"     // 405
	CodeConflict     = "conflict"               // 409: not possible in the current state (cancel a finished uplink)
	CodeTooLarge     = "too_large"              // 413: the body exceeds the limit
	CodeMediaType    = "unsupported_media_type" // 415: a body that is not application/json
	CodeInternal     = "internal"               // 500: the daemon failed
	CodeUnavailable  = "unavailable"            // 503: the daemon is shutting down
)

// Error is the API's error document, {"error": {"code": ..., "message":
// ...}}, and the error the Client returns for it.
type Error struct {
	// Status is the HTTP status (not in the document: the response's).
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("api: %s (%d %s): %s", e.Code, e.Status, http.StatusText(e.Status), e.Message)
}

type errorDoc struct {
	Error *Error `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorDoc{&Error{Code: code, Message: fmt.Sprintf(format, args...)}})
}

// daemonError maps an error of the Daemon to a status and code: its
// sentinels say whose fault it is.
func daemonError(err error) (int, string) {
	switch {
	case errors.Is(err, groundd.ErrNotFound):
		return http.StatusNotFound, CodeNotFound
	case errors.Is(err, groundd.ErrInvalid):
		return http.StatusBadRequest, CodeBadRequest
	case errors.Is(err, groundd.ErrState):
		return http.StatusConflict, CodeConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, CodeUnavailable
	}
	return http.StatusInternalServerError, CodeInternal
}
