package wire

import (
	"encoding/binary"
	"fmt"
	"time"
)

// EntryVersion is the first byte of every raft entry a Request is encoded
// in. Entries stay in the WAL and in followers' logs across upgrades, so
// DecodeRequest must keep reading every version a released binary wrote.
//
// Version 2 (EntryVersion): as version 1, with the lease operations and
// fields added. After its key, a Put has its value, its lease ID and the TTL
// of a lease of its own (nanoseconds, 0 for none); a Delete has nothing
// more. The lease operations have an empty key (written as length 0) and
// then: LeaseGrant its ID and TTL; LeaseKeepalive and LeaseRevoke the ID;
// LeaseExpire the ID, the refresh index and the term; LeaseCheckpoint the
// number of checkpoints and each one's ID, refresh index and remaining TTL
// (nanoseconds). Only Put and Delete carry a condition.
const EntryVersion = 2

// EntryVersion1 is the format written before leases: the request ID, the
// number of operations, then each operation: kind, condition, the
// condition's revision (CondRev only), the key, and the value (Put only).
// Numbers are uvarints; keys and values are length-prefixed bytes. Only Put
// and Delete exist in it.
const EntryVersion1 = 1

// OpKind says what an operation does to its key. Its values are the bytes
// written to the log.
type OpKind byte

// The kinds of operation.
const (
	Put    OpKind = iota + 1 // set the key to the value
	Delete                   // remove the key

	// The lease operations (EntryVersion 2). They name no key.
	LeaseGrant      // create lease Op.Lease (0: the entry's index) with Op.TTL
	LeaseKeepalive  // restart lease Op.Lease's TTL
	LeaseRevoke     // end lease Op.Lease, deleting its keys
	LeaseExpire     // the leader's verdict that lease Op.Lease ran out
	LeaseCheckpoint // the leader's record of remaining TTLs, Op.Checkpoints
)

// String returns "put" or "delete" (the watch event types), or the lease
// operation's name.
func (k OpKind) String() string {
	switch k {
	case Put:
		return "put"
	case LeaseGrant:
		return "lease-grant"
	case LeaseKeepalive:
		return "lease-keepalive"
	case LeaseRevoke:
		return "lease-revoke"
	case LeaseExpire:
		return "lease-expire"
	case LeaseCheckpoint:
		return "lease-checkpoint"
	}
	return "delete"
}

// IsLease reports whether k is one of the lease operations, which name no
// key and carry no condition.
func (k OpKind) IsLease() bool { return k >= LeaseGrant && k <= LeaseCheckpoint }

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

// Op is one change to one key, or one lease operation.
type Op struct {
	Kind    OpKind
	Key     string
	Value   []byte // Put only
	Cond    Cond
	CondRev uint64 // CondRev only

	// Lease is the lease a Put attaches its key to (0: none), or the lease
	// a lease operation acts on. A Put with a TTL grants the key a lease of
	// its own under this ID (0: the entry's index).
	Lease uint64
	// TTL is a LeaseGrant's TTL, or a Put's own lease's.
	TTL time.Duration
	// RefreshIndex and Term qualify a LeaseExpire: it applies only if the
	// lease was last granted or kept alive by the entry at RefreshIndex and
	// the expiry's own entry was appended in Term, by the leader that
	// decided it.
	RefreshIndex uint64
	Term         uint64
	// Checkpoints are a LeaseCheckpoint's remaining TTLs.
	Checkpoints []Checkpoint
}

// Checkpoint is the remaining TTL of one lease as its leader saw it. It
// applies only if the lease's refresh index is still RefreshIndex: a
// keepalive applied in between makes it stale.
type Checkpoint struct {
	Lease        uint64
	RefreshIndex uint64
	Remaining    time.Duration
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
		size += 2 + 6*binary.MaxVarintLen64 + len(o.Key) + len(o.Value) + 3*binary.MaxVarintLen64*len(o.Checkpoints)
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
		b = appendOpFields(b, o)
	}
	return b
}

// appendOpFields appends what follows an op's key in EntryVersion 2.
func appendOpFields(b []byte, o Op) []byte {
	switch o.Kind {
	case Put:
		b = appendBytes(b, o.Value)
		b = binary.AppendUvarint(b, o.Lease)
		b = binary.AppendUvarint(b, uint64(o.TTL))
	case LeaseGrant:
		b = binary.AppendUvarint(b, o.Lease)
		b = binary.AppendUvarint(b, uint64(o.TTL))
	case LeaseKeepalive, LeaseRevoke:
		b = binary.AppendUvarint(b, o.Lease)
	case LeaseExpire:
		b = binary.AppendUvarint(b, o.Lease)
		b = binary.AppendUvarint(b, o.RefreshIndex)
		b = binary.AppendUvarint(b, o.Term)
	case LeaseCheckpoint:
		b = binary.AppendUvarint(b, uint64(len(o.Checkpoints)))
		for _, c := range o.Checkpoints {
			b = binary.AppendUvarint(b, c.Lease)
			b = binary.AppendUvarint(b, c.RefreshIndex)
			b = binary.AppendUvarint(b, uint64(c.Remaining))
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
	v := d.byte()
	if v != EntryVersion && v != EntryVersion1 {
		return Request{}, fmt.Errorf("decode request: %w: version %d", ErrCorrupt, v)
	}
	r := Request{ID: d.uvarint()}
	n := d.count()
	if n == 0 && d.err == nil {
		return Request{}, fmt.Errorf("decode request: %w: no operations", ErrCorrupt)
	}
	r.Ops = make([]Op, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		o, err := decodeOp(&d, v)
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

func decodeOp(d *decoder, version byte) (Op, error) {
	o := Op{Kind: OpKind(d.byte()), Cond: Cond(d.byte())}
	if o.Cond == CondRev {
		o.CondRev = d.uvarint()
	}
	o.Key = string(d.bytes())
	switch {
	case version == EntryVersion1 && o.Kind == Put:
		o.Value = d.bytes()
	case version == EntryVersion1:
	default:
		decodeOpFields(d, &o)
	}
	switch {
	case d.err != nil:
		return Op{}, d.err
	case o.Kind != Put && o.Kind != Delete && (version == EntryVersion1 || !o.Kind.IsLease()):
		return Op{}, fmt.Errorf("%w: kind %d", ErrCorrupt, o.Kind)
	case o.Cond > CondExists:
		return Op{}, fmt.Errorf("%w: condition %d", ErrCorrupt, o.Cond)
	case o.Kind.IsLease() && (o.Key != "" || o.Cond != CondNone):
		return Op{}, fmt.Errorf("%w: %s with a key or condition", ErrCorrupt, o.Kind)
	case !o.Kind.IsLease() && o.Key == "":
		return Op{}, fmt.Errorf("%w: empty key", ErrCorrupt)
	case o.TTL < 0:
		return Op{}, fmt.Errorf("%w: negative TTL", ErrCorrupt)
	}
	for _, c := range o.Checkpoints {
		if c.Remaining < 0 {
			return Op{}, fmt.Errorf("%w: negative remaining TTL", ErrCorrupt)
		}
	}
	return o, nil
}

// decodeOpFields reads what appendOpFields wrote.
func decodeOpFields(d *decoder, o *Op) {
	switch o.Kind {
	case Put:
		o.Value = d.bytes()
		o.Lease = d.uvarint()
		o.TTL = time.Duration(d.uvarint())
	case LeaseGrant:
		o.Lease = d.uvarint()
		o.TTL = time.Duration(d.uvarint())
	case LeaseKeepalive, LeaseRevoke:
		o.Lease = d.uvarint()
	case LeaseExpire:
		o.Lease, o.RefreshIndex, o.Term = d.uvarint(), d.uvarint(), d.uvarint()
	case LeaseCheckpoint:
		n := d.count()
		o.Checkpoints = make([]Checkpoint, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			o.Checkpoints = append(o.Checkpoints, Checkpoint{Lease: d.uvarint(), RefreshIndex: d.uvarint(),
				Remaining: time.Duration(d.uvarint())})
		}
	}
}
