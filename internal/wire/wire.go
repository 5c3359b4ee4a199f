// Package wire is the byte format of what raftexample writes to its log and
// its snapshots: the payload of a raft entry (a Request), the data of a raft
// snapshot (a Membership) and the state file beside each snapshot (items and
// watch history). It holds plain data types and their encoding, nothing of
// how the server keeps them in memory.
//
// Each format starts with its own version byte (EntryVersion,
// MembershipVersion, StateVersion). A member must read every version a
// released binary wrote: a change to a format takes a new version, keeps the
// decoder of the old one, and adds a data directory of the old format under
// the root's testdata/upgrade. The files in testdata/golden hold bytes written
// by the encoders of today's versions; TestGolden fails if those bytes no
// longer decode, or no longer come out of the encoders, the same.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt is what every decoder's error wraps when the bytes are not a
// value of its format: truncated, damaged, of an unknown version, or with
// bytes after the end.
var ErrCorrupt = errors.New("malformed data")

// appendBytes appends p with its length before it.
func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// decoder reads the fields appendBytes and binary.AppendUvarint wrote from a
// buffer held whole. The first failure sticks, so callers check err once at
// the end.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("header")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes reads a length-prefixed field. The result shares the buffer.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("field")
		return nil
	}
	p := d.buf[:n:n]
	d.buf = d.buf[n:]
	return p
}

// count reads a length and bounds it by the bytes left, so a corrupt length
// cannot make the caller allocate a huge map.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("count")
		return 0
	}
	return int(n)
}

// finish reports the first failure, or bytes left after the value.
func (d *decoder) finish() error {
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.buf))
	}
	return d.err
}
