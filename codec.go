package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The replicated log carries kvstore operations in a small binary format:
// a format version, an operation kind, the proposer's request ID, then
// length-prefixed fields. Keys and values are arbitrary bytes, which a text
// format such as JSON could not carry without mangling invalid UTF-8.
const codecVersion = 1

type opKind byte

const (
	opPut opKind = iota + 1
	opDelete
)

// op is one state-machine command. ID lets the proposing member find the
// request that waits for it; other members ignore it.
type op struct {
	Kind  opKind
	ID    uint64
	Key   string
	Value []byte
}

var errCorrupt = errors.New("malformed data")

func encodeOp(o op) []byte {
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(o.Key)+len(o.Value))
	b = append(b, codecVersion, byte(o.Kind))
	b = binary.AppendUvarint(b, o.ID)
	b = appendBytes(b, []byte(o.Key))
	if o.Kind == opPut {
		b = appendBytes(b, o.Value)
	}
	return b
}

func decodeOp(data []byte) (op, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != codecVersion {
		return op{}, fmt.Errorf("decode op: %w: version %d", errCorrupt, v)
	}
	o := op{Kind: opKind(d.byte()), ID: d.uvarint(), Key: string(d.bytes())}
	switch o.Kind {
	case opPut:
		o.Value = d.bytes()
	case opDelete:
	default:
		return op{}, fmt.Errorf("decode op: %w: kind %d", errCorrupt, o.Kind)
	}
	if err := d.finish(); err != nil {
		return op{}, fmt.Errorf("decode op: %w", err)
	}
	if o.Key == "" {
		return op{}, fmt.Errorf("decode op: %w: empty key", errCorrupt)
	}
	return o, nil
}

// kvValue is a stored value with the raft index of the entry that wrote it.
type kvValue struct {
	Value []byte
	Rev   uint64
}

func encodeKV(m map[string]kvValue) []byte {
	size := 1 + binary.MaxVarintLen64
	for k, v := range m {
		size += len(k) + len(v.Value) + 3*binary.MaxVarintLen64
	}
	b := make([]byte, 0, size)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(len(m)))
	for k, v := range m {
		b = appendBytes(b, []byte(k))
		b = binary.AppendUvarint(b, v.Rev)
		b = appendBytes(b, v.Value)
	}
	return b
}

func decodeKV(data []byte) (map[string]kvValue, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("decode kv snapshot: %w: version %d", errCorrupt, v)
	}
	n := d.count()
	m := make(map[string]kvValue, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := string(d.bytes())
		m[k] = kvValue{Rev: d.uvarint(), Value: d.bytes()}
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("decode kv snapshot: %w", err)
	}
	return m, nil
}

// snapshotState is what a raft snapshot holds: the membership known at the
// snapshot's index (so a restarted member can reach peers added at run time)
// and the kvstore's own encoding of its map.
type snapshotState struct {
	Members map[uint64]string // member ID -> peer URL
	Removed []uint64          // IDs that may never be used again
	KV      []byte
}

func encodeSnapshot(s snapshotState) []byte {
	b := make([]byte, 0, 16+len(s.KV)+64*len(s.Members))
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(len(s.Members)))
	for id, u := range s.Members {
		b = binary.AppendUvarint(b, id)
		b = appendBytes(b, []byte(u))
	}
	b = binary.AppendUvarint(b, uint64(len(s.Removed)))
	for _, id := range s.Removed {
		b = binary.AppendUvarint(b, id)
	}
	return appendBytes(b, s.KV)
}

func decodeSnapshot(data []byte) (snapshotState, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != codecVersion {
		return snapshotState{}, fmt.Errorf("decode snapshot: %w: version %d", errCorrupt, v)
	}
	s := snapshotState{Members: map[uint64]string{}}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		id := d.uvarint()
		s.Members[id] = string(d.bytes())
	}
	n = d.count()
	for i := 0; i < n && d.err == nil; i++ {
		s.Removed = append(s.Removed, d.uvarint())
	}
	s.KV = d.bytes()
	if err := d.finish(); err != nil {
		return snapshotState{}, fmt.Errorf("decode snapshot: %w", err)
	}
	return s, nil
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// decoder reads the fields appendBytes and binary.AppendUvarint wrote. The
// first failure sticks, so callers check err once at the end.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
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

func (d *decoder) finish() error {
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.buf))
	}
	return d.err
}
