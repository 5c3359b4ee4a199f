package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"slices"
	"time"
)

// StateVersion is the first byte of a state file, <index>.snap.db beside a
// raft snapshot, which holds the key-value state at the snapshot's index.
// State files stay on disk across upgrades and are sent to followers, so
// ReadState must keep reading every version a released binary wrote.
//
// Version 3 (StateVersion): as version 2, with each item's create revision
// and lease after its revision, each event's create revision after its
// revision, and after the history the number of leases and each lease's ID,
// TTL, remaining TTL (both nanoseconds), refresh index and whether it is a
// key's own (one byte, 0 or 1), before the CRC.
const StateVersion = 3

// StateVersion2 is the format written before leases: the number of items,
// each item's key, revision and value, the history's start revision, the
// number of events, each event's kind, key, revision and value, then a
// CRC-32C (Castagnoli) of all that, as 4 bytes little-endian. Numbers are
// uvarints; keys and values are length-prefixed. (Its number follows the
// snapshot format of which it was split out; there never was a state file
// of version 1.) Read from it, an item's create revision is its revision
// (the oldest it could be is unknown) and it has no lease.
const StateVersion2 = 2

// Item is one key of a state file, with its value, its revision (the raft
// index of the entry that last wrote it), the revision that created it,
// and the lease it is attached to (0: none).
type Item struct {
	Key       string
	Value     []byte
	Rev       uint64
	CreateRev uint64
	Lease     uint64
}

// Event is one applied change in a state file's history.
type Event struct {
	Type      OpKind
	Key       string
	Value     []byte // Put only; empty for Delete
	Rev       uint64
	CreateRev uint64 // Put only
}

// Lease is one lease of a state file. Remaining is its TTL left as of the
// last grant, keepalive or checkpoint; RefreshIndex is the entry of the
// last grant or keepalive. Its keys are the items that name it.
type Lease struct {
	ID           uint64
	TTL          time.Duration
	Remaining    time.Duration
	RefreshIndex uint64
	Own          bool // a key's own lease (PUT ?ttl=)
}

// History is the recent changes a state file keeps after its items, the ones
// watchers may resume from. Events holds every change with a revision above
// Start, in the order they were applied.
type History struct {
	Start  uint64
	Events []Event
}

// ItemSink takes a state file's items as ReadState decodes them, so that a
// state of millions of keys goes straight into the caller's structure
// instead of through one big slice.
type ItemSink interface {
	// Expect is called once, before any Add, with the number of items the
	// file says it holds (bounded by its size). If ReadState fails before
	// it reaches the items, neither method is called.
	Expect(n int)
	// Add takes one item, in the order they were written (key order). The
	// item's Value is its own allocation, of its exact size: the sink may
	// keep it.
	Add(Item)
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// WriteState streams a state file of the format of StateVersion to w: n
// items, in key order, from items, then h, then leases. It writes in chunks
// of about 64 kB, so the state is never held in one buffer. It fails if
// items does not yield exactly n items.
func WriteState(w io.Writer, n int, items iter.Seq[Item], h History, leases []Lease) error {
	c := &chunkWriter{w: w, buf: make([]byte, 0, 64<<10)}
	c.buf = append(c.buf, StateVersion)
	c.buf = binary.AppendUvarint(c.buf, uint64(n))
	wrote := 0
	for it := range items {
		if wrote++; wrote > n {
			return fmt.Errorf("write state: more than the %d items announced", n)
		}
		c.buf = appendBytes(c.buf, []byte(it.Key))
		c.buf = binary.AppendUvarint(c.buf, it.Rev)
		c.buf = binary.AppendUvarint(c.buf, it.CreateRev)
		c.buf = binary.AppendUvarint(c.buf, it.Lease)
		c.buf = appendBytes(c.buf, it.Value)
		if !c.maybeFlush() {
			return c.err
		}
	}
	if wrote < n {
		return fmt.Errorf("write state: %d items, %d announced", wrote, n)
	}
	c.buf = binary.AppendUvarint(c.buf, h.Start)
	c.buf = binary.AppendUvarint(c.buf, uint64(len(h.Events)))
	for _, e := range h.Events {
		c.buf = append(c.buf, byte(e.Type))
		c.buf = appendBytes(c.buf, []byte(e.Key))
		c.buf = binary.AppendUvarint(c.buf, e.Rev)
		c.buf = binary.AppendUvarint(c.buf, e.CreateRev)
		c.buf = appendBytes(c.buf, e.Value)
		if !c.maybeFlush() {
			return c.err
		}
	}
	c.buf = binary.AppendUvarint(c.buf, uint64(len(leases)))
	for _, l := range leases {
		c.buf = binary.AppendUvarint(c.buf, l.ID)
		c.buf = binary.AppendUvarint(c.buf, uint64(l.TTL))
		c.buf = binary.AppendUvarint(c.buf, uint64(l.Remaining))
		c.buf = binary.AppendUvarint(c.buf, l.RefreshIndex)
		c.buf = append(c.buf, map[bool]byte{false: 0, true: 1}[l.Own])
		if !c.maybeFlush() {
			return c.err
		}
	}
	if c.flush() != nil {
		return c.err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, c.crc))
	return err
}

// chunkWriter collects encoded fields and writes them in chunks, keeping a
// CRC of what it wrote.
type chunkWriter struct {
	w   io.Writer
	buf []byte
	crc uint32
	err error
}

// maybeFlush writes the chunk once it is full, and reports whether all
// writes so far succeeded.
func (c *chunkWriter) maybeFlush() bool {
	if len(c.buf) >= 60<<10 {
		c.flush()
	}
	return c.err == nil
}

func (c *chunkWriter) flush() error {
	if c.err == nil && len(c.buf) > 0 {
		c.crc = crc32.Update(c.crc, crcTable, c.buf)
		_, c.err = c.w.Write(c.buf)
		c.buf = c.buf[:0]
	}
	return c.err
}

// ReadState decodes a state file of size bytes from r, handing its items to
// sink as it goes, and returns its history and leases. It reads StateVersion
// and StateVersion2. Lengths are checked against the bytes left, so a
// corrupt file cannot make it allocate more than the file holds. On an
// error, sink may have taken some items: the caller discards them.
func ReadState(r io.Reader, size int64, sink ItemSink) (History, []Lease, error) {
	d := &stateDecoder{r: bufio.NewReaderSize(r, 1<<16), left: size}
	d.version = d.byte()
	if d.version != StateVersion && d.version != StateVersion2 && d.err == nil {
		return History{}, nil, fmt.Errorf("decode kv state: %w: version %d", ErrCorrupt, d.version)
	}
	if d.err == nil {
		d.items(sink)
	}
	h := d.history()
	var leases []Lease
	if d.version == StateVersion {
		leases = d.leases()
	}
	if err := d.finish(); err != nil {
		return History{}, nil, fmt.Errorf("decode kv state: %w", err)
	}
	return h, leases, nil
}

// items decodes the count-prefixed items into sink.
func (d *stateDecoder) items(sink ItemSink) {
	n := d.count()
	sink.Expect(n)
	var key []byte // reused: the key is copied into a string
	for i := 0; i < n && d.err == nil; i++ {
		key = d.field(key[:0])
		it := Item{Key: string(key), Rev: d.uvarint()}
		it.CreateRev = it.Rev
		if d.version == StateVersion {
			it.CreateRev, it.Lease = d.uvarint(), d.uvarint()
		}
		if it.Value = d.field(nil); d.err == nil {
			sink.Add(it)
		}
	}
}

// history decodes the history's start and its count-prefixed events.
func (d *stateDecoder) history() History {
	h := History{Start: d.uvarint()}
	n := d.count()
	h.Events = make([]Event, 0, n)
	var key []byte
	for i := 0; i < n && d.err == nil; i++ {
		e := Event{Type: OpKind(d.byte())}
		key = d.field(key[:0])
		e.Key, e.Rev = string(key), d.uvarint()
		if d.version == StateVersion {
			e.CreateRev = d.uvarint()
		} else if e.Type == Put {
			e.CreateRev = e.Rev
		}
		e.Value = d.field(nil)
		h.Events = append(h.Events, e)
	}
	return h
}

// leases decodes the count-prefixed leases of StateVersion 3.
func (d *stateDecoder) leases() []Lease {
	n := d.count()
	leases := make([]Lease, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		l := Lease{ID: d.uvarint(), TTL: time.Duration(d.uvarint()), Remaining: time.Duration(d.uvarint()), RefreshIndex: d.uvarint()}
		switch own := d.byte(); {
		case own > 1 || l.TTL < 0 || l.Remaining < 0:
			d.fail("lease")
		default:
			l.Own = own == 1
		}
		leases = append(leases, l)
	}
	return leases
}

// stateDecoder reads WriteState's fields from a stream, keeping a CRC of
// what it consumed. The first failure sticks, so callers check err at the
// end.
type stateDecoder struct {
	version byte
	r       *bufio.Reader
	left    int64 // bytes of the stream not yet consumed
	crc     uint32
	err     error
	one     [binary.MaxVarintLen64]byte
}

func (d *stateDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
}

func (d *stateDecoder) consumed(p []byte) {
	d.crc = crc32.Update(d.crc, crcTable, p)
	d.left -= int64(len(p))
}

func (d *stateDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	c, err := d.r.ReadByte()
	if err != nil {
		d.fail("header")
		return 0
	}
	d.one[0] = c
	d.consumed(d.one[:1])
	return c
}

func (d *stateDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c, err := d.r.ReadByte()
		if err != nil {
			break
		}
		d.one[i] = c
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break // overflows 64 bits
			}
			d.consumed(d.one[:i+1])
			return v | uint64(c)<<(7*i)
		}
		v |= uint64(c&0x7f) << (7 * i)
	}
	d.fail("number")
	return 0
}

// field reads a length-prefixed field, appending it to buf. With a nil buf
// the field gets an allocation of its exact size, since values are kept.
func (d *stateDecoder) field(buf []byte) []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(d.left) {
		d.fail("field")
		return nil
	}
	if buf == nil {
		buf = make([]byte, 0, n)
	}
	start := len(buf)
	buf = slices.Grow(buf, int(n))[:start+int(n)]
	if _, err := io.ReadFull(d.r, buf[start:]); err != nil {
		d.fail("field")
		return nil
	}
	d.consumed(buf[start:])
	return buf
}

// count reads a number of records, each at least one byte long.
func (d *stateDecoder) count() int {
	n := d.uvarint()
	if n > uint64(d.left) {
		d.fail("count")
		return 0
	}
	return int(n)
}

// finish checks the CRC trailer and that nothing follows it.
func (d *stateDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	var sum [4]byte
	if _, err := io.ReadFull(d.r, sum[:]); err != nil {
		return fmt.Errorf("%w: truncated checksum", ErrCorrupt)
	}
	if got := binary.LittleEndian.Uint32(sum[:]); got != d.crc {
		return fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, d.crc, got)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes", ErrCorrupt)
	}
	return nil
}
