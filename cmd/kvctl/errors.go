package main

import (
	"errors"
	"fmt"
	"net/http"
)

// Exit codes, as etcdctl users expect them and docs/kvctl describes.
const (
	exitOK           = 0
	exitError        = 1 // anything that went wrong
	exitUsage        = 2 // unknown command or flag, wrong arguments
	exitPrecondition = 3 // a condition of a write or a txn did not hold
)

// usageError is a command line kvctl cannot run: wrong arguments or flags.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitCode maps an error returned by a command to the process's exit code.
func exitCode(err error) int {
	var ue *usageError
	var ae *apiError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ae) && ae.Status == http.StatusPreconditionFailed:
		return exitPrecondition
	default:
		return exitError
	}
}
