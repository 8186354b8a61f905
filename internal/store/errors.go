package store

import "errors"

// ErrClosed is returned (wrapped) by Commit and Load after Close.
var ErrClosed = errors.New("store closed")
