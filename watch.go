package main

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// errCompacted answers a watch that asks for history no longer retained.
var errCompacted = errors.New("revision is older than the retained watch history")

// compactedError is errCompacted with the lowest revision a watch may start
// from now: the history holds every change after CompactRevision, so a
// watch with rev=CompactRevision (or above) gets all of them.
type compactedError struct {
	CompactRevision uint64
}

func (e *compactedError) Error() string {
	return fmt.Sprintf("%v: the oldest revision a watch may start from is %d (compactRevision); list the keys again (GET /v1/kv) and watch from the listing's rev",
		errCompacted, e.CompactRevision)
}

func (e *compactedError) Unwrap() error { return errCompacted }

// watcher receives the changes for one key or one key prefix, a whole
// revision at a time.
type watcher struct {
	key    string
	prefix bool
	after  uint64       // only changes above this revision are delivered
	revs   chan []event // the matching events of one revision each
	queued atomic.Int64 // bytes of the revisions in revs, by eventBytes
	limit  int64        // most bytes queued, unless revs is empty
	cut    atomic.Bool  // set before revs is closed when it fell behind
}

func (w *watcher) matches(key string) bool {
	if w.prefix {
		return strings.HasPrefix(key, w.key)
	}
	return key == w.key
}

// CutOff reports whether the watcher was closed because it fell behind (or
// the member restored a snapshot), rather than because the member stopped.
func (w *watcher) CutOff() bool { return w.cut.Load() }

// Revisions delivers the watcher's changes, the events of one revision per
// receive; it is closed when the watch ends. The reader hands each
// revision back to Received once it has taken it.
func (w *watcher) Revisions() <-chan []event { return w.revs }

// Received frees the queue space of a revision taken from Revisions.
func (w *watcher) Received(evs []event) { w.queued.Add(-revisionBytes(evs)) }

// offer queues one revision's events without blocking, and reports whether
// there was room: fewer than cap(revs) revisions queued, and either none at
// all or room for its bytes. Only the applier sends on revs (under s.mu),
// so a revision found room for is queued.
func (w *watcher) offer(evs []event) bool {
	if len(w.revs) == cap(w.revs) {
		return false
	}
	size := revisionBytes(evs)
	if len(w.revs) > 0 && w.queued.Load()+size > w.limit {
		return false
	}
	w.queued.Add(size)
	w.revs <- evs
	return true
}

// Watch registers a watcher for key (or every key starting with key when
// prefix is set). With resume, it also returns the retained events with a
// revision above afterRev, or a *compactedError when some of them are
// gone; a revision not yet reached waits for the changes after it.
// Without resume, it sees only changes applied from now on. It returns the
// revision the watch starts after.
func (s *kvstore) Watch(key string, prefix bool, afterRev uint64, resume bool) (*watcher, []event, uint64, error) {
	w := &watcher{key: key, prefix: prefix, revs: make(chan []event, s.cfg.WatchQueueRevisions), limit: s.cfg.WatchQueueBytes}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return nil, nil, 0, errStopping
	default:
	}
	var backlog []event
	if !resume {
		afterRev = s.applied
	} else {
		if afterRev < s.histStart {
			return nil, nil, 0, &compactedError{CompactRevision: s.histStart}
		}
		for _, e := range s.history {
			if e.Rev > afterRev && w.matches(e.Key) {
				backlog = append(backlog, e)
			}
		}
	}
	w.after = afterRev
	s.watchers[w] = struct{}{}
	return w, backlog, afterRev, nil
}

// Unwatch ends a watch the caller no longer reads.
func (s *kvstore) Unwatch(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watchers[w]; ok {
		delete(s.watchers, w)
		close(w.revs)
	}
}

// notify hands one entry's events, one revision, to every watcher that
// wants some of them, all or none, without blocking: a watcher without
// room for them is cut off, so a watcher only ever sees whole revisions
// and can resume after the last one it saw. The caller holds s.mu.
func (s *kvstore) notify(evs []event) {
	for w := range s.watchers {
		mine := w.filter(evs)
		if len(mine) > 0 && !w.offer(mine) {
			w.cut.Store(true)
			delete(s.watchers, w)
			close(w.revs)
		}
	}
}

// filter returns the events of evs that w wants: evs itself when it wants
// them all, as it does for most writes, which then allocate nothing.
func (w *watcher) filter(evs []event) []event {
	if evs[0].Rev <= w.after { // a watch that waits for a later revision
		return nil
	}
	n := 0
	for _, e := range evs {
		if w.matches(e.Key) {
			n++
		}
	}
	if n == len(evs) || n == 0 {
		return evs[:n]
	}
	mine := make([]event, 0, n)
	for _, e := range evs {
		if w.matches(e.Key) {
			mine = append(mine, e)
		}
	}
	return mine
}

// cutOffWatchers ends every watch as fallen behind; the caller holds s.mu.
func (s *kvstore) cutOffWatchers() {
	for w := range s.watchers {
		w.cut.Store(true)
		delete(s.watchers, w)
		close(w.revs)
	}
}

// closeWatchers ends every watch because the member stops.
func (s *kvstore) closeWatchers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		delete(s.watchers, w)
		close(w.revs)
	}
}
