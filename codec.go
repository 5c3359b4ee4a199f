package main

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/btree"
)

// The replicated log carries kvstore requests in a small binary format: a
// format version, the proposer's request ID, then the operations, each with
// length-prefixed fields. Keys and values are arbitrary bytes, which a text
// format such as JSON could not carry without mangling invalid UTF-8.
const codecVersion = 1

type opKind byte

const (
	opPut opKind = iota + 1
	opDelete
)

func (k opKind) String() string {
	if k == opPut {
		return "put"
	}
	return "delete"
}

// condKind is a precondition an operation needs to apply, checked against the
// state at the moment its entry is applied.
type condKind byte

const (
	condNone   condKind = iota
	condRev             // the key exists with revision CondRev (If-Match)
	condAbsent          // the key does not exist (If-None-Match: *)
	condExists          // the key exists (If-Match: *)
)

// op is one change to one key.
type op struct {
	Kind    opKind
	Key     string
	Value   []byte
	Cond    condKind
	CondRev uint64
}

// request is the payload of one raft entry: operations applied atomically,
// all or none. ID lets the proposing member find the caller waiting for it;
// other members ignore it.
type request struct {
	ID  uint64
	Ops []op
}

var errCorrupt = errors.New("malformed data")

func encodeRequest(r request) []byte {
	size := 1 + 2*binary.MaxVarintLen64
	for _, o := range r.Ops {
		size += 2 + 3*binary.MaxVarintLen64 + len(o.Key) + len(o.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, r.ID)
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, o := range r.Ops {
		b = append(b, byte(o.Kind), byte(o.Cond))
		if o.Cond == condRev {
			b = binary.AppendUvarint(b, o.CondRev)
		}
		b = appendBytes(b, []byte(o.Key))
		if o.Kind == opPut {
			b = appendBytes(b, o.Value)
		}
	}
	return b
}

func decodeRequest(data []byte) (request, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != codecVersion {
		return request{}, fmt.Errorf("decode request: %w: version %d", errCorrupt, v)
	}
	r := request{ID: d.uvarint()}
	n := d.count()
	if n == 0 && d.err == nil {
		return request{}, fmt.Errorf("decode request: %w: no operations", errCorrupt)
	}
	r.Ops = make([]op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		o, err := decodeOneOp(&d)
		if err != nil {
			return request{}, fmt.Errorf("decode request: op %d: %w", i, err)
		}
		r.Ops = append(r.Ops, o)
	}
	if err := d.finish(); err != nil {
		return request{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

func decodeOneOp(d *decoder) (op, error) {
	o := op{Kind: opKind(d.byte()), Cond: condKind(d.byte())}
	if o.Cond == condRev {
		o.CondRev = d.uvarint()
	}
	o.Key = string(d.bytes())
	if o.Kind == opPut {
		o.Value = d.bytes()
	}
	switch {
	case d.err != nil:
		return op{}, d.err
	case o.Kind != opPut && o.Kind != opDelete:
		return op{}, fmt.Errorf("%w: kind %d", errCorrupt, o.Kind)
	case o.Cond > condExists:
		return op{}, fmt.Errorf("%w: condition %d", errCorrupt, o.Cond)
	case o.Key == "":
		return op{}, fmt.Errorf("%w: empty key", errCorrupt)
	}
	return o, nil
}

// kvItem is a stored key with its value and the raft index (revision) of
// the entry that last wrote it.
type kvItem struct {
	Key   string
	Value []byte
	Rev   uint64
}

// event is one applied change, as watchers see it.
type event struct {
	Type  opKind
	Key   string
	Value []byte
	Rev   uint64
}

// kvState is everything the kvstore keeps in a snapshot: the keys in order,
// and the recent history that watchers may resume from. History holds every
// event with a revision above HistStart.
type kvState struct {
	Items     *btree.BTreeG[kvItem]
	HistStart uint64
	History   []event
}

func encodeKV(s kvState) []byte {
	// Size the buffer exactly: a snapshot can be hundreds of megabytes.
	size := 1 + 3*binary.MaxVarintLen64
	s.Items.Ascend(func(it kvItem) bool {
		size += bytesLen(len(it.Key)) + uvarintLen(it.Rev) + bytesLen(len(it.Value))
		return true
	})
	for _, e := range s.History {
		size += 1 + bytesLen(len(e.Key)) + uvarintLen(e.Rev) + bytesLen(len(e.Value))
	}
	b := make([]byte, 0, size)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(s.Items.Len()))
	s.Items.Ascend(func(it kvItem) bool {
		b = appendBytes(b, []byte(it.Key))
		b = binary.AppendUvarint(b, it.Rev)
		b = appendBytes(b, it.Value)
		return true
	})
	b = binary.AppendUvarint(b, s.HistStart)
	b = binary.AppendUvarint(b, uint64(len(s.History)))
	for _, e := range s.History {
		b = append(b, byte(e.Type))
		b = appendBytes(b, []byte(e.Key))
		b = binary.AppendUvarint(b, e.Rev)
		b = appendBytes(b, e.Value)
	}
	return b
}

func decodeKV(data []byte) (kvState, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != codecVersion {
		return kvState{}, fmt.Errorf("decode kv snapshot: %w: version %d", errCorrupt, v)
	}
	s := kvState{Items: newKVTree()}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		it := kvItem{Key: string(d.bytes()), Rev: d.uvarint(), Value: d.bytes()}
		s.Items.ReplaceOrInsert(it)
	}
	s.HistStart = d.uvarint()
	n = d.count()
	s.History = make([]event, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		e := event{Type: opKind(d.byte()), Key: string(d.bytes()), Rev: d.uvarint(), Value: d.bytes()}
		s.History = append(s.History, e)
	}
	if err := d.finish(); err != nil {
		return kvState{}, fmt.Errorf("decode kv snapshot: %w", err)
	}
	return s, nil
}

func newKVTree() *btree.BTreeG[kvItem] {
	return btree.NewG(32, func(a, b kvItem) bool { return a.Key < b.Key })
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

// uvarintLen is how many bytes binary.AppendUvarint writes for v.
func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// bytesLen is how many bytes appendBytes writes for n bytes.
func bytesLen(n int) int { return uvarintLen(uint64(n)) + n }

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
