package gateway

import (
	"cmp"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// Errors. Each error the gateway returns wraps one of them (or an error of
// the Archive or Sequencer, or dict.ErrValue for arguments).
var (
	// ErrUnmatched: a report names no command sent to that vehicle (an
	// unknown sequence number, another opcode, a command never sent).
	ErrUnmatched = errors.New("gateway: report matches no command sent")
	// ErrSettled: a report on a command that was sent and has ended
	// (completed, failed, rejected, timed out past its late window): a
	// duplicate or late report, which changes nothing. It wraps
	// ErrUnmatched; a caller logs it as routine, and ErrUnmatched alone as
	// a report that matches nothing ever sent.
	ErrSettled = fmt.Errorf("%w: the command has ended (a duplicate or late report)", ErrUnmatched)
	// ErrConflict: a report contradicts an earlier one (rejected after
	// accepted, failed after completed).
	ErrConflict = errors.New("gateway: report contradicts an earlier one")
	// ErrWrongVehicle: a message says another vehicle than the one the
	// caller authenticated. It wraps protocol.ErrWrongVehicle too.
	ErrWrongVehicle = fmt.Errorf("gateway: %w", protocol.ErrWrongVehicle)
	// ErrNotMine: a message that is not a verification, telemetry or event.
	ErrNotMine = errors.New("gateway: not a CMD/TLM message")
	// ErrDecode: a telemetry packet or event the dictionary does not
	// describe (archived all the same).
	ErrDecode = errors.New("gateway: does not decode with the dictionary")
	// ErrQueueFull: the vehicle has Config.MaxQueued commands open.
	ErrQueueFull = errors.New("gateway: too many commands in flight")
	// ErrNotFound: no such command.
	ErrNotFound = errors.New("gateway: no such command")
	// ErrState: the command is not in a stage that allows it (cancel a
	// command already sent).
	ErrState = errors.New("gateway: not in that stage")
	// ErrSequence: the Sequencer returned a number it had already returned.
	ErrSequence = errors.New("gateway: sequencer returned a used number")
	// ErrStale: another gateway sharing the archive (another ground
	// station) changed the command first; the gateway reloaded it, and the
	// change was not made.
	ErrStale = errors.New("gateway: command changed by another station")
)

// Defaults of Config.
const (
	DefaultQueueTimeout    = time.Hour
	DefaultAckTimeout      = 2 * time.Minute
	DefaultCompleteTimeout = 10 * time.Minute
	DefaultLateWindow      = 24 * time.Hour
	DefaultMaxQueued       = 64
	DefaultMaxResends      = 4
)

// Config configures a Gateway.
type Config struct {
	// Key and Priv are the ground command key (its id and ed25519 private
	// key) that signs every command.
	Key  protocol.KeyID
	Priv ed25519.PrivateKey
	// Seq numbers commands; Archive keeps them and the telemetry.
	Seq     Sequencer
	Archive Archive
	// MaxFrame is the largest command frame (default protocol.MinMaxFrame:
	// every dictionary command fits a 256-byte frame).
	MaxFrame int
	// QueueTimeout bounds how long a command waits for the link when its
	// request sets no NotAfter; AckTimeout how long a sent command waits
	// for acceptance; CompleteTimeout how long an accepted command waits
	// for its next report (each report restarts it). LateWindow is how
	// long a command that timed out still matches late reports after the
	// gateway restarts (the Archive keeps it for ever).
	QueueTimeout, AckTimeout, CompleteTimeout, LateWindow time.Duration
	// MaxQueued bounds the open commands of one vehicle (timed out ones
	// excluded).
	MaxQueued int
	// MaxResends bounds how many more times Resend hands out the frame of
	// a command the vehicle has not acknowledged (default
	// DefaultMaxResends; negative: never).
	MaxResends int
	// Station names the ground station in the Sent entries of the
	// commands it sends (empty: one station, not named).
	Station string
	// OnChange, if set, is called with a copy of a command each time it
	// changes, under the gateway's lock: it must not call the gateway.
	OnChange func(*Command)
	// Log receives one line per stage change; nil: discard.
	Log *slog.Logger
}

// Gateway sends commands and archives telemetry. It is safe for concurrent
// use.
type Gateway struct {
	cfg   Config
	codec *protocol.Codec // command frames
	arch  *protocol.Codec // archived frames: any size the link carried
	log   *slog.Logger
	// shared is cfg.Archive when several gateways share it (nil: this
	// gateway is the archive's only writer, and its memory is the truth).
	shared SharedArchive

	mu      sync.Mutex
	open    map[uint32]map[uint64]*Command // vehicle -> seq -> open command
	lastSeq map[protocol.KeyID]uint64
}

// Request is a command to send.
type Request struct {
	Vehicle uint32
	// Name is the command's name in the dictionary ("reboot").
	Name string
	// Args are its arguments by name (dict.Values).
	Args dict.Values
	// NotAfter is the latest time to send it (zero: now + QueueTimeout).
	NotAfter time.Time
}

// New returns a gateway, with the open commands of cfg.Archive loaded.
func New(cfg Config) (*Gateway, error) {
	if len(cfg.Priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("gateway: command key is %d bytes, want an ed25519 private key", len(cfg.Priv))
	}
	if cfg.Seq == nil || cfg.Archive == nil {
		return nil, fmt.Errorf("gateway: a Sequencer and an Archive are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.QueueTimeout, DefaultQueueTimeout)
	def(&cfg.AckTimeout, DefaultAckTimeout)
	def(&cfg.CompleteTimeout, DefaultCompleteTimeout)
	def(&cfg.LateWindow, DefaultLateWindow)
	if cfg.QueueTimeout < 0 || cfg.AckTimeout < 0 || cfg.CompleteTimeout < 0 || cfg.LateWindow < 0 {
		return nil, fmt.Errorf("gateway: negative timeout")
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.MaxResends == 0 {
		cfg.MaxResends = DefaultMaxResends
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = protocol.MinMaxFrame
	}
	codec, err := protocol.NewCodec(cfg.MaxFrame)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	arch, err := protocol.NewCodec(protocol.MaxMaxFrame)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{cfg: cfg, codec: codec, arch: arch, log: cfg.Log,
		open: map[uint32]map[uint64]*Command{}, lastSeq: map[protocol.KeyID]uint64{}}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.shared, _ = cfg.Archive.(SharedArchive)
	open, err := cfg.Archive.Commands(CommandQuery{Open: true})
	if err != nil {
		return nil, fmt.Errorf("gateway: load open commands: %w", err)
	}
	for _, c := range open {
		g.track(c)
		g.lastSeq[c.Key] = max(g.lastSeq[c.Key], c.Seq)
	}
	return g, nil
}

func (g *Gateway) track(c *Command) {
	m := g.open[c.Vehicle]
	if m == nil {
		m = map[uint64]*Command{}
		g.open[c.Vehicle] = m
	}
	m[c.Seq] = c
}

// Submit checks r against the dictionary, numbers, signs and archives the
// command as queued, and returns it.
func (g *Gateway) Submit(now time.Time, r Request) (*Command, error) {
	d, ok := dict.CommandByName(r.Name)
	if !ok {
		return nil, fmt.Errorf("%w: no command %q", dict.ErrValue, r.Name)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.open[r.Vehicle] {
		if !c.settling() {
			n++
		}
	}
	if n >= g.cfg.MaxQueued {
		return nil, fmt.Errorf("%w: vehicle %d has %d", ErrQueueFull, r.Vehicle, n)
	}
	// Check the arguments before a sequence number is spent on them.
	pc, err := d.NewCommand(r.Vehicle, 1, r.Args)
	if err != nil {
		return nil, err
	}
	seq, err := g.cfg.Seq.Next(g.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("gateway: sequence number: %w", err)
	}
	if seq == 0 || seq <= g.lastSeq[g.cfg.Key] {
		return nil, fmt.Errorf("%w: %d for key %d after %d", ErrSequence, seq, g.cfg.Key, g.lastSeq[g.cfg.Key])
	}
	g.lastSeq[g.cfg.Key] = seq
	pc.Seq = seq
	if err := protocol.SignCommand(pc, g.cfg.Key, g.cfg.Priv); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	frame, err := g.codec.Encode(pc)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", r.Name, err)
	}
	notAfter := r.NotAfter
	if notAfter.IsZero() {
		notAfter = now.Add(g.cfg.QueueTimeout)
	}
	c := &Command{Vehicle: r.Vehicle, Key: g.cfg.Key, Seq: seq, Opcode: d.Opcode, Name: d.Name, Args: pc.Args, Frame: frame,
		Submitted: now, NotAfter: notAfter, Stage: Queued, History: []Entry{{Stage: Queued, Time: now}}}
	if err := g.save(c); err != nil {
		return nil, err
	}
	g.track(c)
	g.changed(c)
	return c.clone(), nil
}

// save archives c as its next Version (a compare-and-swap with a
// SharedArchive). On an error the caller puts c back with undo.
func (g *Gateway) save(c *Command) error {
	c.Version++
	if err := g.cfg.Archive.PutCommand(c.clone()); err != nil {
		return fmt.Errorf("gateway: archive command %d/%d: %w", c.Key, c.Seq, err)
	}
	return nil
}

// undo puts c back as it was (prev) after save failed with err; when
// another station changed it first, c is reloaded from the archive.
func (g *Gateway) undo(c, prev *Command, err error) {
	*c = *prev
	if errors.Is(err, ErrStale) {
		if rerr := g.reload(c.Vehicle, c.Key, c.Seq); rerr != nil {
			g.log.Warn("gateway: reload command", "vehicle", c.Vehicle, "seq", c.Seq, "err", rerr)
		}
	}
}

// reload replaces the command (key, seq) of vehicle in memory with the
// archive's copy (a SharedArchive's), tracked while open and forgotten
// once not (a command not archived, or another vehicle's, is left alone).
func (g *Gateway) reload(vehicle uint32, key protocol.KeyID, seq uint64) error {
	_, err := g.reloaded(vehicle, key, seq)
	return err
}

// reloaded is reload, and returns the archive's copy (nil: none, or
// another vehicle's).
func (g *Gateway) reloaded(vehicle uint32, key protocol.KeyID, seq uint64) (*Command, error) {
	if g.shared == nil {
		return nil, nil
	}
	c, err := g.shared.Command(key, seq)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: reload command %d/%d: %w", key, seq, err)
	}
	if c.Vehicle != vehicle {
		return nil, nil // not that vehicle's command: a report naming it matches nothing
	}
	if cur := g.open[vehicle][seq]; cur != nil && cur.Version > c.Version {
		return c, nil // not written yet where the archive was read: keep ours
	}
	if !c.Open() {
		g.forget(vehicle, seq)
		return c, nil
	}
	if cur := g.open[vehicle][seq]; cur != nil {
		*cur = *c
		return c.clone(), nil
	}
	g.track(c)
	return c.clone(), nil
}

func (g *Gateway) forget(vehicle uint32, seq uint64) {
	delete(g.open[vehicle], seq)
	if len(g.open[vehicle]) == 0 {
		delete(g.open, vehicle)
	}
}

// Sync reads vehicle's open commands (0: every vehicle's) from a
// SharedArchive, so that what other stations queued, sent or settled is
// what Next, Resend and Tick work on. Call it before sending to the
// vehicle. Without a SharedArchive it does nothing.
func (g *Gateway) Sync(vehicle uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sync(vehicle)
}

func (g *Gateway) sync(vehicle uint32) error {
	if g.shared == nil {
		return nil
	}
	cs, err := g.shared.OpenCommands(vehicle)
	if err != nil {
		return fmt.Errorf("gateway: sync open commands: %w", err)
	}
	fresh := map[uint32]map[uint64]*Command{}
	for _, c := range cs {
		if vehicle != 0 && c.Vehicle != vehicle || !c.Open() {
			continue
		}
		if cur := g.open[c.Vehicle][c.Seq]; cur != nil && cur.Version > c.Version {
			c = cur // ours is newer than what the archive answered
		}
		m := fresh[c.Vehicle]
		if m == nil {
			m = map[uint64]*Command{}
			fresh[c.Vehicle] = m
		}
		m[c.Seq] = c
	}
	if vehicle == 0 {
		g.open = fresh
		return nil
	}
	if len(fresh[vehicle]) == 0 {
		delete(g.open, vehicle)
	} else {
		g.open[vehicle] = fresh[vehicle]
	}
	return nil
}

func (g *Gateway) changed(c *Command) {
	e := c.Last()
	attrs := []any{"vehicle", c.Vehicle, "seq", c.Seq, "command", c.Name, "stage", e.Stage.String()}
	if e.Code != 0 {
		attrs = append(attrs, "code", e.Code, "reason", e.Reason)
	}
	if e.Stage == Timeout {
		attrs = append(attrs, "waited", e.Waited.String())
	}
	if e.Late {
		attrs = append(attrs, "late", true)
	}
	g.log.Info("command", attrs...)
	if g.cfg.OnChange != nil {
		g.cfg.OnChange(c.clone())
	}
}

// Out is a command frame to send.
type Out struct {
	Vehicle uint32
	Key     protocol.KeyID
	Seq     uint64
	Frame   []byte
}

// Next returns vehicle's oldest queued command, recorded (and archived) as
// sent at now: send its frame next. ok is false when nothing is queued.
// Call Next only when the link to the vehicle is up; if the send fails at
// once (the link went down), Unsend puts the command back.
func (g *Gateway) Next(now time.Time, vehicle uint32) (out Out, ok bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first *Command
	for _, c := range g.open[vehicle] {
		if c.Stage == Queued && now.Before(c.NotAfter) && (first == nil || c.Seq < first.Seq) {
			first = c
		}
	}
	if first == nil {
		return Out{}, false, nil
	}
	prev := first.clone()
	first.Stage = Sent
	first.addEntry(Entry{Stage: Sent, Time: now, Station: g.cfg.Station})
	if err := g.save(first); err != nil {
		g.undo(first, prev, err)
		return Out{}, false, err
	}
	g.changed(first)
	return Out{Vehicle: vehicle, Key: first.Key, Seq: first.Seq, Frame: first.Frame}, true, nil
}

// Unsend puts a command that Next returned back in the queue: its frame did
// not leave (the link refused it at once).
func (g *Gateway) Unsend(now time.Time, vehicle uint32, seq uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.open[vehicle][seq]
	if c == nil {
		return fmt.Errorf("%w: vehicle %d seq %d", ErrNotFound, vehicle, seq)
	}
	if c.Stage != Sent {
		return fmt.Errorf("%w: vehicle %d seq %d is %v, not sent", ErrState, vehicle, seq, c.Stage)
	}
	prev := c.clone()
	c.Stage = Queued
	c.History = c.History[:len(c.History)-1]
	if err := g.save(c); err != nil {
		g.undo(c, prev, err)
		return err
	}
	g.changed(c)
	return nil
}

// Resend returns vehicle's oldest sent command that is not acknowledged
// yet and whose next copy is due at now (see resendAt), recorded (and
// archived) as resent: send its frame again, the same frame with the same
// sequence number. A copy of a command the vehicle already took is refused
// there as replayed (and answered: see Command.replayRejected), so a
// command runs at most once however many copies go out. base is the wait
// before the first copy, about two round trips of the vehicle's link; each
// next copy waits twice as long, at most Config.MaxResends copies, none
// after the command's ack timeout. Call Resend only when the link is up.
func (g *Gateway) Resend(now time.Time, vehicle uint32, base time.Duration) (out Out, ok bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first *Command
	for _, c := range g.open[vehicle] {
		if t, due := g.resendAt(c, base); due && !now.Before(t) && (first == nil || c.Seq < first.Seq) {
			first = c
		}
	}
	if first == nil {
		return Out{}, false, nil
	}
	prev := first.clone()
	first.Resends++
	first.ResentAt = now
	if err := g.save(first); err != nil {
		g.undo(first, prev, err)
		return Out{}, false, err
	}
	g.log.Info("command resent", "vehicle", first.Vehicle, "seq", first.Seq, "command", first.Name, "resends", first.Resends)
	if g.cfg.OnChange != nil {
		g.cfg.OnChange(first.clone())
	}
	return Out{Vehicle: vehicle, Key: first.Key, Seq: first.Seq, Frame: first.Frame}, true, nil
}

// NextResend returns the earliest time Resend has a copy for vehicle (ok
// false: none), with the same base.
func (g *Gateway) NextResend(vehicle uint32, base time.Duration) (t time.Time, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.open[vehicle] {
		if d, due := g.resendAt(c, base); due && (!ok || d.Before(t)) {
			t, ok = d, true
		}
	}
	return t, ok
}

// resendAt is when c's next copy is due: base after it was sent, then
// doubling after each copy; ok is false for a command that is not waiting
// for its acknowledgement, that had its copies, or whose next copy would
// come after its ack timeout.
func (g *Gateway) resendAt(c *Command, base time.Duration) (t time.Time, ok bool) {
	if c.Stage != Sent || base <= 0 || c.Resends >= g.cfg.MaxResends {
		return time.Time{}, false
	}
	sent := c.Last().Time
	last := sent
	if c.Resends > 0 && c.ResentAt.After(sent) {
		last = c.ResentAt
	}
	t = last.Add(min(base<<min(c.Resends, 16), g.cfg.AckTimeout))
	if !t.Before(sent.Add(g.cfg.AckTimeout)) {
		return time.Time{}, false
	}
	return t, true
}

// Cancel cancels a command that has not been sent.
func (g *Gateway) Cancel(now time.Time, vehicle uint32, seq uint64) (*Command, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.reload(vehicle, g.cfg.Key, seq); err != nil {
		return nil, err
	}
	c := g.open[vehicle][seq]
	if c == nil {
		return nil, fmt.Errorf("%w: vehicle %d seq %d is not open", ErrNotFound, vehicle, seq)
	}
	if c.Stage != Queued {
		return nil, fmt.Errorf("%w: vehicle %d seq %d is %v: only a queued command can be cancelled", ErrState, vehicle, seq, c.Stage)
	}
	if err := g.set(c, Entry{Stage: Cancelled, Time: now}); err != nil {
		return nil, err
	}
	return c.clone(), nil
}

// set moves c to e's stage, archives it, and forgets it when final. On an
// archive error c is unchanged.
func (g *Gateway) set(c *Command, e Entry) error {
	prev := c.clone()
	c.Stage = e.Stage
	switch e.Stage {
	case Rejected, Failed:
		c.Code, c.Reason = e.Code, e.Reason
	case Accepted, Started, Progress, Completed:
		c.Code, c.Reason = 0, "" // a report that supersedes a "replayed" rejection
	}
	c.addEntry(e)
	if err := g.save(c); err != nil {
		g.undo(c, prev, err)
		return err
	}
	if !c.Open() {
		g.forget(c.Vehicle, c.Seq)
	}
	g.changed(c)
	return nil
}

// deadline returns when c times out, or forgets it (timed out long ago);
// ok is false when c has no timer.
func (g *Gateway) deadline(c *Command) (t time.Time, ok bool) {
	last := c.Last().Time
	switch c.Stage {
	case Queued:
		return c.NotAfter, true
	case Sent:
		return last.Add(g.cfg.AckTimeout), true
	case Accepted, Started, Progress:
		return last.Add(g.cfg.CompleteTimeout), true
	}
	return time.Time{}, false
}

// Tick times out the commands whose deadline is at or before now, and
// forgets the timed-out commands older than LateWindow (they stay in the
// archive). It returns the commands that timed out now.
func (g *Gateway) Tick(now time.Time) ([]*Command, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.sync(0); err != nil {
		return nil, err
	}
	var out []*Command
	var errs []error
	for _, v := range g.sortedVehicles() {
		for _, c := range sortedCommands(g.open[v]) {
			if c.settling() {
				if !now.Before(c.Last().Time.Add(g.cfg.LateWindow)) {
					if err := g.close(c); err != nil {
						errs = append(errs, err)
						continue
					}
					delete(g.open[v], c.Seq)
				}
				continue
			}
			d, ok := g.deadline(c)
			if !ok || now.Before(d) {
				continue
			}
			if err := g.set(c, Entry{Stage: Timeout, Time: now, Waited: c.Stage}); err != nil {
				if !errors.Is(err, ErrStale) {
					errs = append(errs, err)
				} // else another station moved it first (timed it out, a report): reloaded
				continue
			}
			out = append(out, c.clone())
		}
		if len(g.open[v]) == 0 {
			delete(g.open, v)
		}
	}
	return out, errors.Join(errs...)
}

// close marks a settling command the gateway stops waiting on as Closed in
// a SharedArchive, so that no station loads it again (without one, the
// archive's copy stays as it is: New forgets it again).
func (g *Gateway) close(c *Command) error {
	if g.shared == nil {
		return nil
	}
	prev := c.clone()
	c.Closed = true
	if err := g.save(c); err != nil {
		g.undo(c, prev, err)
		if errors.Is(err, ErrStale) {
			return nil // another station changed or closed it: reloaded
		}
		return err
	}
	return nil
}

// NextDeadline returns the earliest time Tick has something to do (ok
// false: nothing).
func (g *Gateway) NextDeadline() (t time.Time, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.open {
		for _, c := range m {
			d, has := g.deadline(c)
			if c.settling() {
				d, has = c.Last().Time.Add(g.cfg.LateWindow), true
			}
			if has && (!ok || d.Before(t)) {
				t, ok = d, true
			}
		}
	}
	return t, ok
}

func (g *Gateway) sortedVehicles() []uint32 {
	vs := make([]uint32, 0, len(g.open))
	for v := range g.open {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

func sortedCommands(m map[uint64]*Command) []*Command {
	cs := make([]*Command, 0, len(m))
	for _, c := range m {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *Command) int { return cmp.Compare(a.Seq, b.Seq) })
	return cs
}

// Receive takes a message from vehicle, which the caller authenticated
// (protocol.ReturnVerifier of that vehicle): a verification report moves
// its command, telemetry and events are archived. Other messages return
// ErrNotMine.
func (g *Gateway) Receive(now time.Time, vehicle uint32, m protocol.Message) error {
	switch m := m.(type) {
	case *protocol.Verification:
		if m.Vehicle != vehicle {
			return fmt.Errorf("%w: a report from vehicle %d says vehicle %d", ErrWrongVehicle, vehicle, m.Vehicle)
		}
		return g.verification(now, m)
	case *protocol.Telemetry:
		if m.Vehicle != vehicle {
			return fmt.Errorf("%w: telemetry from vehicle %d says vehicle %d", ErrWrongVehicle, vehicle, m.Vehicle)
		}
		return g.archive(now, KindTelemetry, vehicle, m.Packet, m.Time, m.Seq, m)
	case *protocol.Event:
		if m.Vehicle != vehicle {
			return fmt.Errorf("%w: an event from vehicle %d says vehicle %d", ErrWrongVehicle, vehicle, m.Vehicle)
		}
		return g.archive(now, KindEvent, vehicle, m.ID, m.Time, m.Seq, m)
	case nil:
		return fmt.Errorf("%w: nil message", ErrNotMine)
	}
	return fmt.Errorf("%w: %v", ErrNotMine, m.Type())
}

func (g *Gateway) verification(now time.Time, v *protocol.Verification) error {
	st, ok := stageOf(v.Stage)
	if !ok {
		return fmt.Errorf("%w: stage %d", ErrUnmatched, v.Stage)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// With a shared archive, another station may have sent the command or
	// moved it on: work on the archive's copy, and again if another
	// station's change wins the race.
	for try := 0; ; try++ {
		if err := g.reload(v.Vehicle, g.cfg.Key, v.Seq); err != nil {
			return err
		}
		// A report on a command that ended at another station is a
		// duplicate there as here: ErrUnmatched, nothing changes.
		err := g.verify(now, v, st)
		if !errors.Is(err, ErrStale) || try >= 3 {
			return err
		}
	}
}

// settled says whether v reports on a command of v's vehicle, with v's
// opcode, that the archive holds as sent and ended.
func (g *Gateway) settled(v *protocol.Verification) bool {
	cs, err := g.cfg.Archive.Commands(CommandQuery{Vehicle: v.Vehicle, Key: g.cfg.Key, Seq: v.Seq, Limit: 1})
	if err != nil || len(cs) != 1 {
		return false
	}
	c := cs[0]
	if c.Vehicle != v.Vehicle || c.Opcode != v.Opcode || c.Open() {
		return false
	}
	for _, e := range c.History {
		if e.Stage == Sent {
			return true
		}
	}
	return false
}

func (g *Gateway) verify(now time.Time, v *protocol.Verification, st Stage) error {
	c := g.open[v.Vehicle][v.Seq]
	if c == nil || c.Stage == Queued || (c.Stage == Timeout && c.Last().Waited == Queued) {
		// Final commands are forgotten: a report on one is a duplicate or
		// a contradiction, and either way it changes nothing.
		if c == nil && g.settled(v) {
			return fmt.Errorf("%w: vehicle %d seq %d (%v)", ErrSettled, v.Vehicle, v.Seq, v.Stage)
		}
		return fmt.Errorf("%w: vehicle %d seq %d (%v)", ErrUnmatched, v.Vehicle, v.Seq, v.Stage)
	}
	if v.Opcode != c.Opcode {
		return fmt.Errorf("%w: vehicle %d seq %d: report for opcode %d, command %s has %d", ErrUnmatched, v.Vehicle, v.Seq, v.Opcode, c.Name, c.Opcode)
	}
	cur := c.prevRank()
	switch {
	case st == Rejected && v.Code == codeReplayed && (cur > Sent.rank() || c.replayRejected()):
		return nil // the answer to a duplicate of a frame the vehicle already took
	case st == Rejected && cur > Sent.rank():
		return fmt.Errorf("%w: vehicle %d seq %d: rejected after %v", ErrConflict, v.Vehicle, v.Seq, c.Stage)
	case st.rank() < cur:
		return nil // an older report, overtaken by a newer one: nothing new
	case st.rank() == cur && st == Progress:
		if v.Step <= c.lastStep() {
			return nil
		}
	case st.rank() == cur && (c.Stage == st || c.Last().Waited == st):
		return nil // a duplicate
	case st.rank() == cur:
		return fmt.Errorf("%w: vehicle %d seq %d: %v after %v", ErrConflict, v.Vehicle, v.Seq, st, c.Stage)
	}
	e := Entry{Stage: st, Time: now, Step: v.Step, Code: v.Code, Reason: ReasonName(v.Code), Late: c.settling()}
	return g.set(c, e)
}

// archive stores one telemetry packet or event; a message the dictionary
// does not describe is archived too, and reported with ErrDecode.
func (g *Gateway) archive(now time.Time, kind Kind, vehicle uint32, id uint16, timeMs int64, seq uint32, m protocol.Message) error {
	frame, err := g.arch.Encode(m)
	if err != nil {
		return fmt.Errorf("gateway: archive %v: %w", kind, err)
	}
	t := now
	if timeMs != 0 {
		t = time.UnixMilli(timeMs).UTC()
	}
	r := &Record{Kind: kind, Vehicle: vehicle, ID: id, Time: t, Received: now, Seq: seq, Frame: frame}
	if err := g.cfg.Archive.Append(r); err != nil {
		return fmt.Errorf("gateway: archive %v: %w", kind, err)
	}
	if _, err := decodeRecord(g.arch, r); err != nil {
		return err
	}
	return nil
}
