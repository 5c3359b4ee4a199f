package wire

import (
	"encoding/binary"
	"fmt"
)

// MembershipVersion is the first byte of a raft snapshot's data, which holds
// the membership (the key-value state is in the snapshot's state file).
// Snapshots stay on disk across upgrades, so DecodeMembership must keep
// reading every version a released binary wrote.
//
// Version 2: the number of members, each member's ID and peer URL, then the
// number of removed IDs and each ID. Numbers are uvarints; URLs are
// length-prefixed. Version 1 held the whole key-value state inline; it was
// never released and is refused.
const MembershipVersion = 2

// Membership is what a raft snapshot's data holds: the members known at the
// snapshot's index, so a restarted member can reach peers added at run
// time.
type Membership struct {
	Members map[uint64]string // member ID -> peer URL
	Removed []uint64          // IDs that may never be used again
}

// EncodeMembership returns m in the format of MembershipVersion. Members are
// written in map order, so two encodings of one membership may differ; each
// decodes to the same Membership.
func EncodeMembership(m Membership) []byte {
	b := make([]byte, 0, 16+64*len(m.Members))
	b = append(b, MembershipVersion)
	b = binary.AppendUvarint(b, uint64(len(m.Members)))
	for id, u := range m.Members {
		b = binary.AppendUvarint(b, id)
		b = appendBytes(b, []byte(u))
	}
	b = binary.AppendUvarint(b, uint64(len(m.Removed)))
	for _, id := range m.Removed {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

// DecodeMembership decodes a snapshot's data EncodeMembership wrote. Members
// is never nil.
func DecodeMembership(data []byte) (Membership, error) {
	d := decoder{buf: data}
	if v := d.byte(); v != MembershipVersion && d.err == nil {
		return Membership{}, fmt.Errorf("decode snapshot: %w: version %d (snapshots before format %d are not supported)", ErrCorrupt, v, MembershipVersion)
	}
	m := Membership{Members: map[uint64]string{}}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		id := d.uvarint()
		m.Members[id] = string(d.bytes())
	}
	n = d.count()
	for i := 0; i < n && d.err == nil; i++ {
		m.Removed = append(m.Removed, d.uvarint())
	}
	if err := d.finish(); err != nil {
		return Membership{}, fmt.Errorf("decode snapshot: %w", err)
	}
	return m, nil
}
