package scenario

import (
	"context"
	"sync"

	"github.com/bootorbit/bootorbit/protocol"
	plink "github.com/bootorbit/bootorbit/protocol/link"
)

// faultLink is groundd's end of the link with the ground-side faults: it
// can alter the data of the next chunk frames it sends (re-encoding the
// frame, so that its checksum is right: a tampering, not line noise), and
// it lets the runner inject frames of its own (a forged command).
type faultLink struct {
	plink.Link
	codec *protocol.Codec

	mu       sync.Mutex
	tampers  int
	Tampered int
}

func (l *faultLink) tamper(n int) {
	l.mu.Lock()
	l.tampers += n
	l.mu.Unlock()
}

// Send implements plink.Link.
func (l *faultLink) Send(ctx context.Context, frame []byte) error {
	l.mu.Lock()
	doit := l.tampers > 0
	l.mu.Unlock()
	if doit {
		if m, err := l.codec.Decode(frame); err == nil {
			if c, ok := m.(*protocol.Chunk); ok && len(c.Data) > 0 {
				c.Data = append([]byte(nil), c.Data...)
				c.Data[len(c.Data)/2] ^= 0xa5
				if b, err := l.codec.Encode(c); err == nil {
					frame = b
					l.mu.Lock()
					l.tampers--
					l.Tampered++
					l.mu.Unlock()
				}
			}
		}
	}
	return l.Link.Send(ctx, frame)
}
