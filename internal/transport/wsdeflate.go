package transport

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// permessage-deflate (RFC 7692), always without context takeover in either
// direction: every message is compressed and decompressed on its own, so a
// connection holds no compression state between messages. Compressors and
// decompressors are taken from pools for the length of one message; an idle
// connection costs nothing extra, and a peer cannot make the server keep a
// 32 KiB window per connection.
//
// Go's compress/flate always uses a 32 KiB window (15 bits). A client that
// asks the server for a smaller window (server_max_window_bits < 15) is
// declined: it gets an uncompressed connection. The client's own window is
// at most 15 bits by the RFC, which the decompressor handles, so
// client_max_window_bits is never sent back.

const (
	// deflateMinSize: smaller messages are sent uncompressed (most MQTT
	// control packets): compression would cost more than it saves.
	deflateMinSize = 128
	// deflateFrameSize bounds the compressed payload of one outgoing frame:
	// a large message is sent as several frames while it is compressed,
	// without buffering all of it.
	deflateFrameSize = 32 << 10
	// inflateBufSize is the read buffer for compressed input, held only
	// while a compressed message is being read.
	inflateBufSize = 4 << 10
)

// deflateTail is what a sender strips from each compressed message and the
// receiver puts back: the end of an empty stored block (RFC 7692 7.2.1).
var deflateTail = [4]byte{0x00, 0x00, 0xff, 0xff}

// inflateSuffix follows a message's compressed bytes when they are fed to
// the decompressor: the stripped tail, then a final empty stored block, so
// that the decompressor reports io.EOF at the end of the message.
var inflateSuffix = [9]byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// maxCompressors bounds how many messages are compressed at once across the
// process: a compressor holds about 1 MiB. When all are busy a message is
// sent uncompressed (compression is optional per message), so memory stays
// bounded whatever the number of connections.
var maxCompressors = 4 * runtime.GOMAXPROCS(0)

var compressors = make(chan *flate.Writer, maxCompressors)

// compressorSlots counts compressors created, up to maxCompressors.
var compressorSlots = make(chan struct{}, maxCompressors)

// getCompressor returns a compressor writing to w, or nil when all are in
// use.
func getCompressor(w io.Writer) *flate.Writer {
	select {
	case fw := <-compressors:
		fw.Reset(w)
		return fw
	default:
	}
	select {
	case compressorSlots <- struct{}{}:
		fw, _ := flate.NewWriter(w, flate.BestSpeed) // a valid level: no error
		return fw
	default:
		return nil
	}
}

func putCompressor(fw *flate.Writer) {
	fw.Reset(io.Discard) // drop the reference to the conn
	compressors <- fw    // never blocks: at most maxCompressors exist
}

var emptyByteReader = bytes.NewReader(nil)

var decompressors = sync.Pool{New: func() any { return flate.NewReader(emptyByteReader) }}

// inflateState is what reading a compressed message takes, pooled: a
// connection between messages holds none.
type inflateState struct {
	fr        io.ReadCloser // the decompressor
	ibuf      [inflateBufSize]byte
	ir, iw    int   // unread compressed bytes in ibuf
	suffixPos int   // of inflateSuffix given to the decompressor
	inflated  int64 // decompressed bytes of the message so far
}

var inflateStates = sync.Pool{New: func() any { return new(inflateState) }}

var deflateBufs = sync.Pool{New: func() any { b := make([]byte, 0, deflateFrameSize+len(deflateTail)); return &b }}

// deflateOffer is what DialWSConfig offers: no context takeover either way,
// which the server side always answers with anyway.
var deflateOffer = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}.Option()

// negotiateDeflate returns the Negotiate callback of a ws.HTTPUpgrader that
// accepts the first acceptable permessage-deflate offer and sets *accepted.
func negotiateDeflate(accepted *bool) func(httphead.Option) (httphead.Option, error) {
	return func(opt httphead.Option) (httphead.Option, error) {
		if *accepted || !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
			return httphead.Option{}, nil
		}
		var offer wsflate.Parameters
		if err := offer.Parse(opt); err != nil {
			// Unknown or repeated parameters: decline this offer, a
			// later one may fit (RFC 7692 5).
			return httphead.Option{}, nil
		}
		if offer.ServerMaxWindowBits.Defined() && offer.ServerMaxWindowBits < 15 {
			return httphead.Option{}, nil
		}
		resp := wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
		if offer.ServerMaxWindowBits.Defined() {
			// [RFC 7692 7.1.2.1] an offered server_max_window_bits must be
			// answered with a value no larger.
			resp.ServerMaxWindowBits = 15
		}
		*accepted = true
		return resp.Option(), nil
	}
}

// acceptedDeflate reports whether a handshake response accepted
// permessage-deflate in a form this adapter speaks: the server must not keep
// context between messages (the client side always resets).
func acceptedDeflate(exts []httphead.Option) (bool, error) {
	for _, opt := range exts {
		if !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
			continue
		}
		var p wsflate.Parameters
		if err := p.Parse(opt); err != nil {
			return false, fmt.Errorf("websocket: server's permessage-deflate response: %w", err)
		}
		if !p.ServerNoContextTakeover {
			return false, errors.New("websocket: server's permessage-deflate response keeps context between messages, which is not supported")
		}
		return true, nil
	}
	return false, nil
}

// inflateSrc reads the compressed bytes of the current message for the
// decompressor, frame after frame (answering control frames in between),
// then inflateSuffix, then io.EOF. It is a ByteReader so that flate reads no
// further than it needs. Called with rmu held.
type inflateSrc WSConn

func (s *inflateSrc) fill() error {
	c := (*WSConn)(s)
	for c.remaining == 0 {
		if c.fin {
			if c.inf.suffixPos >= len(inflateSuffix) {
				return io.EOF
			}
			c.inf.ibuf[0] = inflateSuffix[c.inf.suffixPos]
			c.inf.suffixPos++
			c.inf.ir, c.inf.iw = 0, 1
			return nil
		}
		if err := c.nextFrame(); err != nil {
			return err
		}
	}
	n := int(min(int64(len(c.inf.ibuf)), c.remaining))
	n, err := (*rawReader)(c).Read(c.inf.ibuf[:n])
	if n > 0 {
		if c.masked {
			ws.Cipher(c.inf.ibuf[:n], c.mask, c.maskPos)
			c.maskPos = (c.maskPos + n) & 3
		}
		c.remaining -= int64(n)
		c.inf.ir, c.inf.iw = 0, n
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the frame was cut short
	}
	// Even a deadline expiry is final here: the decompressor keeps the
	// first error it sees.
	c.rerr = err
	return err
}

func (s *inflateSrc) ReadByte() (byte, error) {
	if s.inf.ir == s.inf.iw {
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	b := s.inf.ibuf[s.inf.ir]
	s.inf.ir++
	return b, nil
}

func (s *inflateSrc) Read(p []byte) (int, error) {
	if s.inf.ir == s.inf.iw {
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.inf.ibuf[s.inf.ir:s.inf.iw])
	s.inf.ir += n
	return n, nil
}

// startInflate begins reading a compressed message whose first frame header
// has just been read. Called with rmu held.
func (c *WSConn) startInflate() {
	c.inflating = true
	c.inf = inflateStates.Get().(*inflateState)
	c.inf.ir, c.inf.iw, c.inf.suffixPos = 0, 0, 0
	c.inf.inflated = 0
	c.inf.fr = decompressors.Get().(io.ReadCloser)
	_ = c.inf.fr.(flate.Resetter).Reset((*inflateSrc)(c), nil) // no dictionary: cannot fail
}

// endInflate returns the message's decompressor and state to their pools.
func (c *WSConn) endInflate() {
	if !c.inflating {
		return
	}
	_ = c.inf.fr.(flate.Resetter).Reset(emptyByteReader, nil)
	decompressors.Put(c.inf.fr)
	c.inf.fr = nil
	inflateStates.Put(c.inf)
	c.inf, c.inflating = nil, false
}

// readInflated reads decompressed bytes of the current message into p. It
// returns 0, nil at the end of the message. Called with rmu held.
func (c *WSConn) readInflated(p []byte) (int, error) {
	if c.maxInflate > 0 && int64(len(p)) > c.maxInflate-c.inf.inflated+1 {
		// Read at most one byte past the bound: enough to see it crossed.
		p = p[:c.maxInflate-c.inf.inflated+1]
	}
	n, err := c.inf.fr.Read(p)
	c.inf.inflated += int64(n)
	if c.maxInflate > 0 && c.inf.inflated > c.maxInflate {
		c.endInflate()
		return 0, c.fail(uint16(ws.StatusMessageTooBig), fmt.Sprintf("decompressed message exceeds %d bytes", c.maxInflate))
	}
	switch {
	case err == nil:
		return n, nil
	case c.rerr != nil: // the network, or a protocol error found by nextFrame
		c.endInflate()
		return n, nil // the sticky error is returned by the next call
	case err == io.EOF:
		// The message's last block: skip what may follow it (nothing, or
		// the sync-flush tail), bounded like the output.
		for skipped := int64(0); ; skipped++ {
			_, derr := (*inflateSrc)(c).ReadByte()
			if derr == io.EOF {
				break
			}
			if derr != nil {
				c.endInflate()
				return n, nil // c.rerr is set
			}
			if c.maxInflate > 0 && skipped > c.maxInflate {
				c.endInflate()
				return 0, c.fail(uint16(ws.StatusMessageTooBig), fmt.Sprintf("more than %d bytes after the end of a compressed message", c.maxInflate))
			}
		}
		c.endInflate()
		return n, nil
	default:
		c.endInflate()
		return 0, c.fail(uint16(ws.StatusInvalidFramePayloadData), "bad compressed data: "+err.Error())
	}
}

// deflateSink collects compressed output for writeCompressedLocked and sends
// it as frames of at most deflateFrameSize, holding back the last 4 bytes,
// which are the tail to strip if the message ends there.
type deflateSink struct {
	c    *WSConn
	buf  []byte
	sent bool // a frame of this message was sent
	err  error
}

func (s *deflateSink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n0 := len(p)
	for len(p) > 0 {
		if len(s.buf) == cap(s.buf) {
			// Send all but the last 4 bytes, not the end of the message.
			keep := len(deflateTail)
			s.err = s.frame(s.buf[:len(s.buf)-keep], false)
			if s.err != nil {
				return 0, s.err
			}
			copy(s.buf, s.buf[len(s.buf)-keep:])
			s.buf = s.buf[:keep]
		}
		n := min(len(p), cap(s.buf)-len(s.buf))
		s.buf = append(s.buf, p[:n]...)
		p = p[n:]
	}
	return n0, nil
}

// frame sends one frame of the compressed message: the first carries RSV1.
func (s *deflateSink) frame(payload []byte, fin bool) error {
	h := ws.Header{Fin: fin, OpCode: ws.OpContinuation, Length: int64(len(payload))}
	if !s.sent {
		h.OpCode, h.Rsv = ws.OpBinary, ws.Rsv(true, false, false)
	}
	s.sent = true
	return s.c.writeFrameLocked(h, payload)
}

// writeCompressedLocked sends p as one compressed message, or uncompressed
// when no compressor is free or compression would not make it smaller.
// Called with wmu held.
func (c *WSConn) writeCompressedLocked(p []byte) error {
	bp := deflateBufs.Get().(*[]byte)
	defer deflateBufs.Put(bp)
	sink := &deflateSink{c: c, buf: (*bp)[:0]}
	fw := getCompressor(sink)
	if fw == nil {
		return c.writeFrameLocked(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(p))}, p)
	}
	_, err := fw.Write(p)
	if err == nil {
		err = fw.Flush()
	}
	putCompressor(fw)
	if err != nil {
		return err // the sink's: the conn failed
	}
	out := sink.buf
	if len(out) < len(deflateTail) || [4]byte(out[len(out)-len(deflateTail):]) != deflateTail {
		return fmt.Errorf("websocket: compressor output does not end with a sync flush")
	}
	out = out[:len(out)-len(deflateTail)]
	if !sink.sent && len(out) >= len(p) {
		return c.writeFrameLocked(ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(p))}, p)
	}
	return sink.frame(out, true)
}
