package main

import (
	"errors"
	"net"
	"time"
)

var errListenerStopped = errors.New("listener stopped")

// stoppableListener is the raft peer listener: Accept fails once stopc is
// closed, which ends the peer HTTP server's Serve loop. Accepted connections
// get TCP keep-alives so dead peers are noticed.
type stoppableListener struct {
	*net.TCPListener
	stopc <-chan struct{}
}

func newStoppableListener(addr string, stopc <-chan struct{}) (*stoppableListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return wrapStoppable(ln.(*net.TCPListener), stopc), nil
}

// wrapStoppable makes ln stoppable; closing stopc closes ln.
func wrapStoppable(ln *net.TCPListener, stopc <-chan struct{}) *stoppableListener {
	go func() {
		<-stopc
		ln.Close()
	}()
	return &stoppableListener{TCPListener: ln, stopc: stopc}
}

func (ln *stoppableListener) Accept() (net.Conn, error) {
	tc, err := ln.AcceptTCP()
	if err != nil {
		select {
		case <-ln.stopc:
			return nil, errListenerStopped
		default:
			return nil, err
		}
	}
	tc.SetKeepAlive(true)
	tc.SetKeepAlivePeriod(3 * time.Minute)
	return tc, nil
}
