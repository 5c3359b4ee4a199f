package wire

import (
	"encoding/binary"
	"fmt"
)

// EntryVersion is the first byte of every raft entry a Request is encoded
// in. Entries stay in the WAL and in followers' logs across upgrades, so
// DecodeRequest must keep reading every version a released binary wrote.
//
// Version 1: the request ID, the number of operations, then each operation:
// kind, condition, the condition's revision (CondRev only), the key, and the
// value (Put only). Numbers are uvarints; keys and values are
// length-prefixed bytes.
const EntryVersion = 1

// OpKind says what an operation does to its key. Its values are the bytes
// written to the log.
type OpKind byte

// The kinds of operation.
const (
	Put    OpKind = iota + 1 // set the key to the value
	Delete                   // remove the key
)

// String returns "put" or "delete".
func (k OpKind) String() string {
	if k == Put {
		return "put"
	}
	return "delete"
}

// Cond is a precondition an operation needs to apply, checked against the
// state at the moment its entry is applied. Its values are the bytes written
// to the log.
type Cond byte

// The conditions an operation may carry.
const (
	CondNone   Cond = iota // none: the operation always applies
	CondRev                // the key exists with revision Op.CondRev (If-Match)
	CondAbsent             // the key does not exist (If-None-Match: *)
	CondExists             // the key exists (If-Match: *)
)

// Op is one change to one key.
type Op struct {
	Kind    OpKind
	Key     string
	Value   []byte // Put only
	Cond    Cond
	CondRev uint64 // CondRev only
}

// Request is the payload of one raft entry: operations applied atomically,
// all or none. ID lets the proposing member find the caller waiting for it;
// other members ignore it.
//
// Keys and values are arbitrary bytes, which is why the log carries a binary
// format: a text format such as JSON could not carry invalid UTF-8 without
// mangling it.
type Request struct {
	ID  uint64
	Ops []Op
}

// EncodeRequest returns r in the format of EntryVersion, in one allocation.
func EncodeRequest(r Request) []byte {
	size := 1 + 2*binary.MaxVarintLen64
	for _, o := range r.Ops {
		size += 2 + 3*binary.MaxVarintLen64 + len(o.Key) + len(o.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, EntryVersion)
	b = binary.AppendUvarint(b, r.ID)
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, o := range r.Ops {
		b = append(b, byte(o.Kind), byte(o.Cond))
		if o.Cond == CondRev {
			b = binary.AppendUvarint(b, o.CondRev)
		}
		b = appendBytes(b, []byte(o.Key))
		if o.Kind == Put {
			b = appendBytes(b, o.Value)
		}
	}
	return b
}

// DecodeRequest decodes an entry EncodeRequest wrote. Values point into
// data. A request without operations, an operation of unknown kind or
// condition, or one with an empty key is ErrCorrupt: every member decodes the
// same bytes, so every member refuses them alike.
func DecodeRequest(data []byte) (Request, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != EntryVersion {
		return Request{}, fmt.Errorf("decode request: %w: version %d", ErrCorrupt, v)
	}
	r := Request{ID: d.uvarint()}
	n := d.count()
	if n == 0 && d.err == nil {
		return Request{}, fmt.Errorf("decode request: %w: no operations", ErrCorrupt)
	}
	r.Ops = make([]Op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		o, err := decodeOp(&d)
		if err != nil {
			return Request{}, fmt.Errorf("decode request: op %d: %w", i, err)
		}
		r.Ops = append(r.Ops, o)
	}
	if err := d.finish(); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

func decodeOp(d *decoder) (Op, error) {
	o := Op{Kind: OpKind(d.byte()), Cond: Cond(d.byte())}
	if o.Cond == CondRev {
		o.CondRev = d.uvarint()
	}
	o.Key = string(d.bytes())
	if o.Kind == Put {
		o.Value = d.bytes()
	}
	switch {
	case d.err != nil:
		return Op{}, d.err
	case o.Kind != Put && o.Kind != Delete:
		return Op{}, fmt.Errorf("%w: kind %d", ErrCorrupt, o.Kind)
	case o.Cond > CondExists:
		return Op{}, fmt.Errorf("%w: condition %d", ErrCorrupt, o.Cond)
	case o.Key == "":
		return Op{}, fmt.Errorf("%w: empty key", ErrCorrupt)
	}
	return o, nil
}
