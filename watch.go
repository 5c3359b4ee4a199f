package main

import (
	"errors"
	"strings"
	"sync/atomic"
)

// errCompacted answers a watch that asks for history no longer retained.
var errCompacted = errors.New("revision is older than the retained watch history")

// watchBuffer is how many events a watcher may fall behind before it is cut
// off. Applying entries never waits for a watcher.
const watchBuffer = 1024

// watcher receives the events for one key or one key prefix.
type watcher struct {
	key    string
	prefix bool
	events chan event
	cut    atomic.Bool // set before events is closed when it fell behind
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

// Events delivers the watcher's events; it is closed when the watch ends.
func (w *watcher) Events() <-chan event { return w.events }

// Watch registers a watcher for key (or every key starting with key when
// prefix is set). With resume, it also returns the retained events with a
// revision above afterRev, and errCompacted when some of them are gone.
// Without resume, it sees only changes applied from now on. It returns the
// revision the watch starts after.
func (s *kvstore) Watch(key string, prefix bool, afterRev uint64, resume bool) (*watcher, []event, uint64, error) {
	w := &watcher{key: key, prefix: prefix, events: make(chan event, watchBuffer)}
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
			return nil, nil, 0, errCompacted
		}
		for _, e := range s.history {
			if e.Rev > afterRev && w.matches(e.Key) {
				backlog = append(backlog, e)
			}
		}
	}
	s.watchers[w] = struct{}{}
	return w, backlog, afterRev, nil
}

// Unwatch ends a watch the caller no longer reads.
func (s *kvstore) Unwatch(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watchers[w]; ok {
		delete(s.watchers, w)
		close(w.events)
	}
}

// notify hands one entry's events to every watcher that wants some of
// them, all or none, without blocking: a watcher without room for all of
// them is cut off, so a watcher only ever sees whole revisions and can
// resume after the last one it saw. The caller holds s.mu.
func (s *kvstore) notify(evs []event) {
	for w := range s.watchers {
		n := 0
		for _, e := range evs {
			if w.matches(e.Key) {
				n++
			}
		}
		switch {
		case n == 0:
		case cap(w.events)-len(w.events) < n: // only the reader drains it
			w.cut.Store(true)
			delete(s.watchers, w)
			close(w.events)
		default:
			for _, e := range evs {
				if w.matches(e.Key) {
					w.events <- e
				}
			}
		}
	}
}

// cutOffWatchers ends every watch as fallen behind; the caller holds s.mu.
func (s *kvstore) cutOffWatchers() {
	for w := range s.watchers {
		w.cut.Store(true)
		delete(s.watchers, w)
		close(w.events)
	}
}

// closeWatchers ends every watch because the member stops.
func (s *kvstore) closeWatchers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		delete(s.watchers, w)
		close(w.events)
	}
}
