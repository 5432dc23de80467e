// Package gatewaytest has test doubles for groundd/gateway: an in-memory
// Archive and Sequencer, a conformance test any Archive can run, and a
// vehicle stand-in that checks commands as flightd does and answers with
// verification reports.
package gatewaytest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/protocol"
)

// Archive is an in-memory gateway.Archive. Err, if set, is returned by
// every method (to test archive failures).
type Archive struct {
	mu       sync.Mutex
	commands []*gateway.Command
	records  []*gateway.Record
	Err      error
}

var _ gateway.SharedArchive = (*Archive)(nil)

// PutCommand implements gateway.SharedArchive: a command with a Version
// replaces only the Version before it.
func (a *Archive) PutCommand(c *gateway.Command) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return a.Err
	}
	c = clone(c)
	for i, o := range a.commands {
		if o.Key == c.Key && o.Seq == c.Seq {
			if c.Version > 0 && o.Version != c.Version-1 {
				return fmt.Errorf("%w: %d/%d is at version %d", gateway.ErrStale, c.Key, c.Seq, o.Version)
			}
			a.commands[i] = c
			return nil
		}
	}
	if c.Version > 1 {
		return fmt.Errorf("%w: %d/%d is not archived", gateway.ErrStale, c.Key, c.Seq)
	}
	a.commands = append(a.commands, c)
	return nil
}

// Command implements gateway.SharedArchive.
func (a *Archive) Command(key protocol.KeyID, seq uint64) (*gateway.Command, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return nil, a.Err
	}
	for _, c := range a.commands {
		if c.Key == key && c.Seq == seq {
			return clone(c), nil
		}
	}
	return nil, fmt.Errorf("%w: %d/%d", gateway.ErrNotFound, key, seq)
}

// OpenCommands implements gateway.SharedArchive.
func (a *Archive) OpenCommands(vehicle uint32) ([]*gateway.Command, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return nil, a.Err
	}
	var out []*gateway.Command
	for _, c := range a.commands {
		if (vehicle == 0 || c.Vehicle == vehicle) && c.Open() {
			out = append(out, clone(c))
		}
	}
	slices.SortFunc(out, func(x, y *gateway.Command) int { return cmp.Compare(x.Seq, y.Seq) })
	return out, nil
}

// Commands implements gateway.Archive.
func (a *Archive) Commands(q gateway.CommandQuery) ([]*gateway.Command, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return nil, a.Err
	}
	var out []*gateway.Command
	for _, c := range a.commands {
		if q.Match(c) {
			out = append(out, clone(c))
		}
	}
	slices.SortStableFunc(out, func(x, y *gateway.Command) int {
		return cmp.Or(x.Submitted.Compare(y.Submitted), cmp.Compare(x.Seq, y.Seq))
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Append implements gateway.Archive.
func (a *Archive) Append(r *gateway.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return a.Err
	}
	c := *r
	c.Frame = slices.Clone(r.Frame)
	a.records = append(a.records, &c)
	return nil
}

// Records implements gateway.Archive.
func (a *Archive) Records(q gateway.Query) ([]*gateway.Record, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return nil, a.Err
	}
	var out []*gateway.Record
	for _, r := range a.records {
		if q.Match(r) {
			c := *r
			c.Frame = slices.Clone(r.Frame)
			out = append(out, &c)
		}
	}
	slices.SortStableFunc(out, func(x, y *gateway.Record) int {
		return cmp.Or(x.Time.Compare(y.Time), x.Received.Compare(y.Received))
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func clone(c *gateway.Command) *gateway.Command {
	d := *c
	d.Args = slices.Clone(c.Args)
	d.Frame = slices.Clone(c.Frame)
	d.History = slices.Clone(c.History)
	return &d
}

// Sequencer is an in-memory gateway.Sequencer: one counter per key.
type Sequencer struct {
	mu   sync.Mutex
	next map[protocol.KeyID]uint64
	// Err, if set, is returned by Next.
	Err error
}

// Next implements gateway.Sequencer.
func (s *Sequencer) Next(key protocol.KeyID) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Err != nil {
		return 0, s.Err
	}
	if s.next == nil {
		s.next = map[protocol.KeyID]uint64{}
	}
	s.next[key]++
	return s.next[key], nil
}

// Set makes the next number for key n+1 (a counter restored from a store,
// or a broken sequencer that repeats itself).
func (s *Sequencer) Set(key protocol.KeyID, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = map[protocol.KeyID]uint64{}
	}
	s.next[key] = n
}

// String is for test logs.
func (s *Sequencer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.next)
}
