package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

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

// The key-value state of a snapshot is streamed to its own file,
// <index>.snap.db in the snapshot directory, the way etcd keeps its backend
// database beside raft's .snap files: a state of millions of keys is never
// held in one buffer, nor in raft's MemoryStorage. The stream is the format
// version, the items in key order, the history, and a CRC-32C of all of it.
const stateVersion = 2

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// writeKV streams s to w in chunks of about 64 kB.
func writeKV(w io.Writer, s kvState) error {
	c := &chunkWriter{w: w, buf: make([]byte, 0, 64<<10)}
	c.buf = append(c.buf, stateVersion)
	c.buf = binary.AppendUvarint(c.buf, uint64(s.Items.Len()))
	s.Items.Ascend(func(it kvItem) bool {
		c.buf = appendBytes(c.buf, []byte(it.Key))
		c.buf = binary.AppendUvarint(c.buf, it.Rev)
		c.buf = appendBytes(c.buf, it.Value)
		return c.maybeFlush()
	})
	c.buf = binary.AppendUvarint(c.buf, s.HistStart)
	c.buf = binary.AppendUvarint(c.buf, uint64(len(s.History)))
	for _, e := range s.History {
		c.buf = append(c.buf, byte(e.Type))
		c.buf = appendBytes(c.buf, []byte(e.Key))
		c.buf = binary.AppendUvarint(c.buf, e.Rev)
		c.buf = appendBytes(c.buf, e.Value)
		if !c.maybeFlush() {
			break
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

// readKV decodes a stream of size bytes written by writeKV. Lengths are
// checked against the bytes left, so a corrupt file cannot make it allocate
// more than the file holds.
func readKV(r io.Reader, size int64) (kvState, error) {
	d := &stateDecoder{r: bufio.NewReaderSize(r, 1<<16), left: size}
	if v := d.byte(); v != stateVersion && d.err == nil {
		return kvState{}, fmt.Errorf("decode kv state: %w: version %d", errCorrupt, v)
	}
	s := kvState{Items: d.items(), HistStart: d.uvarint()}
	n := d.count()
	s.History = make([]event, 0, n)
	var key []byte
	for i := 0; i < n && d.err == nil; i++ {
		e := event{Type: opKind(d.byte())}
		key = d.field(key[:0])
		e.Key, e.Rev, e.Value = string(key), d.uvarint(), d.field(nil)
		s.History = append(s.History, e)
	}
	if err := d.finish(); err != nil {
		return kvState{}, fmt.Errorf("decode kv state: %w", err)
	}
	return s, nil
}

// items decodes the count-prefixed items while another goroutine inserts
// them into the tree: at a million keys each half takes about as long as
// the other, and a restart waits for both.
func (d *stateDecoder) items() *btree.BTreeG[kvItem] {
	const batches = 4
	n := d.count()
	batchSize := min(n, 1024) + 1 // +1: never 0, and a small state fits in one
	full := make(chan []kvItem, batches)
	free := make(chan []kvItem, batches)
	for range batches {
		free <- make([]kvItem, 0, batchSize)
	}
	tree := make(chan *btree.BTreeG[kvItem])
	go func() {
		t := newKVTree()
		for batch := range full {
			for _, it := range batch {
				t.ReplaceOrInsert(it)
			}
			clear(batch)
			free <- batch[:0]
		}
		tree <- t
	}()
	var key []byte
	batch := <-free
	for i := 0; i < n && d.err == nil; i++ {
		key = d.field(key[:0])
		it := kvItem{Key: string(key), Rev: d.uvarint()}
		it.Value = d.field(nil)
		if batch = append(batch, it); len(batch) == batchSize {
			full <- batch
			batch = <-free
		}
	}
	full <- batch
	close(full)
	return <-tree
}

// stateDecoder reads writeKV's fields from a stream, keeping a CRC of what
// it consumed. The first failure sticks, so callers check err at the end.
type stateDecoder struct {
	r    *bufio.Reader
	left int64 // bytes of the stream not yet consumed
	crc  uint32
	err  error
	one  [binary.MaxVarintLen64]byte
}

func (d *stateDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
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

// field reads a length-prefixed field, appending it to buf.
func (d *stateDecoder) field(buf []byte) []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(d.left) {
		d.fail("field")
		return nil
	}
	if buf == nil {
		buf = make([]byte, 0, n) // an exact allocation: values are kept
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
		return fmt.Errorf("%w: truncated checksum", errCorrupt)
	}
	if got := binary.LittleEndian.Uint32(sum[:]); got != d.crc {
		return fmt.Errorf("%w: checksum %08x, want %08x", errCorrupt, d.crc, got)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes", errCorrupt)
	}
	return nil
}

func newKVTree() *btree.BTreeG[kvItem] {
	return btree.NewG(32, func(a, b kvItem) bool { return a.Key < b.Key })
}

// snapshotState is what a raft snapshot's data holds: the membership known
// at the snapshot's index, so a restarted member can reach peers added at
// run time. The key-value state is in the snapshot's .snap.db file.
type snapshotState struct {
	Members map[uint64]string // member ID -> peer URL
	Removed []uint64          // IDs that may never be used again
}

func encodeSnapshot(s snapshotState) []byte {
	b := make([]byte, 0, 16+64*len(s.Members))
	b = append(b, stateVersion)
	b = binary.AppendUvarint(b, uint64(len(s.Members)))
	for id, u := range s.Members {
		b = binary.AppendUvarint(b, id)
		b = appendBytes(b, []byte(u))
	}
	b = binary.AppendUvarint(b, uint64(len(s.Removed)))
	for _, id := range s.Removed {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

func decodeSnapshot(data []byte) (snapshotState, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != stateVersion && d.err == nil {
		return snapshotState{}, fmt.Errorf("decode snapshot: %w: version %d (snapshots before format %d are not supported)", errCorrupt, v, stateVersion)
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
