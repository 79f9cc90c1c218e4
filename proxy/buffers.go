package proxy

import (
	"bufio"
	"io"
	"sync"
	"syscall"
)

// Buffers are held only while a connection is busy: an idle connection
// (waiting for the client's next command, or between replies) holds none, so
// hundreds of idle connections cost little memory. A bufio buffer is taken
// from a pool when bytes arrive or are written and given back as soon as it
// is empty (docs/bench.md: this took the proxy from 26.6 KiB to about 5 KiB
// per idle connection).

// pools of readers and writers, one per buffer size.
var (
	readerPools sync.Map // int -> *sync.Pool of *bufio.Reader
	writerPools sync.Map // int -> *sync.Pool of *bufio.Writer
)

func poolFor(m *sync.Map, size int, mk func() any) *sync.Pool {
	if p, ok := m.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := m.LoadOrStore(size, &sync.Pool{New: mk})
	return p.(*sync.Pool)
}

func getReader(size int, r io.Reader) *bufio.Reader {
	br := poolFor(&readerPools, size, func() any { return bufio.NewReaderSize(nil, size) }).Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// putReader gives back an empty reader.
func putReader(size int, br *bufio.Reader) {
	br.Reset(nil)
	poolFor(&readerPools, size, nil).Put(br)
}

// lazyWriter is a bufio.Writer on w that holds a pooled buffer only while it
// has bytes not yet flushed. Not safe for concurrent use.
type lazyWriter struct {
	w    io.Writer
	size int
	bw   *bufio.Writer
}

func newLazyWriter(w io.Writer, size int) *lazyWriter { return &lazyWriter{w: w, size: size} }

func (l *lazyWriter) Write(p []byte) (int, error) {
	if l.bw == nil {
		l.bw = poolFor(&writerPools, l.size, func() any { return bufio.NewWriterSize(nil, l.size) }).Get().(*bufio.Writer)
		l.bw.Reset(l.w)
	}
	return l.bw.Write(p)
}

// Flush writes the buffered bytes and gives the buffer back. After an error
// the buffer is kept, so the error stays sticky like bufio's.
func (l *lazyWriter) Flush() error {
	if l.bw == nil {
		return nil
	}
	if err := l.bw.Flush(); err != nil {
		return err
	}
	l.bw.Reset(nil)
	poolFor(&writerPools, l.size, nil).Put(l.bw)
	l.bw = nil
	return nil
}

// waitReadable blocks until rc has bytes (or EOF, or an error) to read,
// without reading them, honouring rc's read deadline. It peeks with
// MSG_PEEK|MSG_DONTWAIT before every wait: the runtime's poller is
// edge-triggered, so waiting without first finding the socket empty could
// sleep on bytes that already arrived.
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
}
