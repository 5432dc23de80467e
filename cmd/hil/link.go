package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/hil/link"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/bootorbit/bootorbit/protocol/linksim"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	commands.Add("", func() *cobra.Command { return newLinkCommand(&linkFlags{}) })
}

// newLinkCommand is hil link with its flags in f.
func newLinkCommand(f *linkFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "link",
		Short: "emulate a space link between two UDP endpoints, or two network namespaces (--ip): rate, delay, loss, corruption, passes",
		Long: `Link relays datagrams between the ground side (A) and the vehicle side (B)
through hil/link's channel model, in real time: per direction a rate
(serialisation at bits/s, a bounded transmit queue with tail drop), a one-way
delay and jitter, random and Gilbert-Elliott loss, corruption (one bit
flipped; --drop-corrupt makes it loss), truncation, duplication, reordering;
and a schedule (passes, periodic outages) that --time-scale compresses for
demonstrations. --profile starts from one of protocol/linksim's profiles
(` + strings.Join(linksim.ProfileNames(), ", ") + `); every parameter can be
overridden, for both directions (--loss) or one (--fwd-loss, --ret-loss);
a parameter not given keeps the profile's value.

UDP mode: the ground sends to --listen-a, the vehicle to --listen-b; frames
leave towards --a and --b (or, when not given, the address each side first
sent from). Datagrams from any other address are counted and dropped.

IP mode (--ip; root, /dev/net/tun, ip(8)): creates the namespaces --ns-a and
--ns-b, a TUN device in each (--addr-a, --addr-b; MTU: the profile's frame
size, at least 576), relays IP packets between them through the same model,
and deletes both namespaces on exit. Run programs on either side with
'ip netns exec NS ...': TCP, HTTP downloads, anything IP crosses the link.

The seed (--seed, else a fresh one) is printed: it replays the model's
random decisions. Counters per direction (frames in, delivered, dropped by
cause, duplicated, reordered) are printed on exit, every --interval with -v,
and as one JSON document with --json. Runs until SIGINT or SIGTERM, or for
--for.`,
		Example: `  hil link --profile uhf --time-scale 60 --listen-a 127.0.0.1:7101 --listen-b 127.0.0.1:7102 -v
  hil link --profile geo --a 127.0.0.1:7001 --b 127.0.0.1:7002 --listen-a 127.0.0.1:7101 --listen-b 127.0.0.1:7102 --loss 0.01 --jitter 5ms --seed 7
  hil link --profile sband --fwd-rate 9600 --ret-rate 4.3e6 --delay 25ms --ge-p 0.01 --ge-r 0.25 --corrupt 1e-4 --dup 0.001 --reorder 0.01 --outage-every 1h --outage-for 5m
  hil link --ip --profile leo-fast --ns-a bo-ground --ns-b bo-vehicle`,
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runLink(c, f) },
	}
	f.register(c)
	return c
}

// chanParam is a channel parameter that --NAME sets in both directions
// and --fwd-NAME, --ret-NAME in one.
type chanParam struct {
	name, usage string
	kind        byte // 'f' float, 'd' duration, 's' size, 'i' int, 'b' bool
	set         func(c *link.Channel, v any)
}

var chanParams = []chanParam{
	{"rate", "rate in bits per second (0: no serialisation delay)", 'f', func(c *link.Channel, v any) { c.Rate = v.(float64) }},
	{"delay", "one-way propagation delay", 'd', func(c *link.Channel, v any) { c.Delay = v.(time.Duration) }},
	{"jitter", "delay spread: uniform over delay+-jitter, order kept", 'd', func(c *link.Channel, v any) { c.Jitter = v.(time.Duration) }},
	{"loss", "independent random frame loss probability", 'f', func(c *link.Channel, v any) { c.Loss = v.(float64) }},
	{"ge-p", "Gilbert-Elliott: probability per frame slot of going from good to bad", 'f', func(c *link.Channel, v any) { c.GE.P = v.(float64) }},
	{"ge-r", "Gilbert-Elliott: probability per frame slot of going from bad to good", 'f', func(c *link.Channel, v any) { c.GE.R = v.(float64) }},
	{"ge-bad", "Gilbert-Elliott: loss probability in the bad state (1 when p and r are given and the profile has none)", 'f', func(c *link.Channel, v any) { c.GE.LossBad = v.(float64) }},
	{"ge-good", "Gilbert-Elliott: loss probability in the good state", 'f', func(c *link.Channel, v any) { c.GE.LossGood = v.(float64) }},
	{"corrupt", "probability a frame has one bit flipped", 'f', func(c *link.Channel, v any) { c.Corrupt = v.(float64) }},
	{"truncate", "probability a frame is cut to a random shorter length", 'f', func(c *link.Channel, v any) { c.Truncate = v.(float64) }},
	{"drop-corrupt", "drop corrupted and truncated frames (a radio's frame check) instead of delivering them", 'b', func(c *link.Channel, v any) { c.DropCorrupt = v.(bool) }},
	{"dup", "probability a frame is delivered twice", 'f', func(c *link.Channel, v any) { c.Duplicate = v.(float64) }},
	{"reorder", "probability a frame is held back so that later ones overtake it", 'f', func(c *link.Channel, v any) { c.Reorder = v.(float64) }},
	{"reorder-delay", "largest hold-back of a reordered frame (default 20ms when --reorder is given and the profile has none)", 'd', func(c *link.Channel, v any) { c.ReorderDelay = v.(time.Duration) }},
	{"queue", "transmit queue bound, tail drop beyond (default: 1 s at the rate, at least 16KiB)", 's', func(c *link.Channel, v any) { c.Queue = int(v.(int64)) }},
	{"max-frame", "largest frame carried, longer ones dropped (0: no limit)", 's', func(c *link.Channel, v any) { c.MaxFrame = int(v.(int64)) }},
}

type linkFlags struct {
	profile, listenA, listenB, a, b string
	seed                            uint64
	timeScale                       float64
	interval, runFor                time.Duration
	verbose, json                   bool
	// schedule
	passPeriod, passUp, outageEvery, outageFor, outageOffset time.Duration
	losePassEvery                                            int
	outageAt                                                 map[string]*[]string // by flag name
	returnOdd, alwaysUp                                      bool
	// IP mode
	ip            bool
	nsA, nsB, dev string
	addrA, addrB  string
	mtu           int
	vals          map[string]any // channel parameters by flag name, pointers
	fs            *pflag.FlagSet
}

func (f *linkFlags) register(c *cobra.Command) {
	fs := c.Flags()
	f.fs = fs
	fs.StringVar(&f.profile, "profile", "uhf", "link profile: "+strings.Join(linksim.ProfileNames(), ", "))
	fs.StringVar(&f.listenA, "listen-a", "127.0.0.1:0", "UDP address the ground side sends to")
	fs.StringVar(&f.listenB, "listen-b", "127.0.0.1:0", "UDP address the vehicle side sends to")
	fs.StringVar(&f.a, "a", "", "the ground side's UDP address (default: learned from its first datagram)")
	fs.StringVar(&f.b, "b", "", "the vehicle side's UDP address (default: learned from its first datagram)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the model's random decisions (default: a fresh one, printed)")
	fs.Float64Var(&f.timeScale, "time-scale", 1, "compress the schedule (passes, outages) by this factor: 60 makes a 98-minute orbit last 98 s")
	cli.DurationVar(fs, &f.interval, "interval", 10*time.Second, "print the counters this often with -v")
	cli.DurationVar(fs, &f.runFor, "for", 0, "stop after this long (0: at SIGINT or SIGTERM)")
	cli.DurationVar(fs, &f.passPeriod, "pass-period", 0, "a pass starts every PERIOD (overrides the profile's schedule)")
	cli.DurationVar(fs, &f.passUp, "pass-up", 0, "the link is up for this long at the start of each pass")
	cli.DurationVar(fs, &f.outageEvery, "outage-every", 0, "a periodic outage starts this often")
	cli.DurationVar(fs, &f.outageFor, "outage-for", 0, "each periodic outage lasts this long")
	cli.DurationVar(fs, &f.outageOffset, "outage-offset", 0, "the first periodic outage starts this long after the start")
	fs.IntVar(&f.losePassEvery, "lose-pass-every", 0, "every Nth pass is announced but carries nothing (0: none)")
	fs.BoolVar(&f.returnOdd, "return-odd-passes-down", false, "the return direction is down on odd passes")
	fs.BoolVar(&f.alwaysUp, "always-up", false, "no schedule: the link is always up (before the schedule flags)")
	f.outageAt = map[string]*[]string{}
	for _, n := range []struct{ name, usage string }{
		{"outage-at", "a one-off outage `START+DURATION` from the start (10m+5m), both directions; repeatable"},
		{"fwd-outage-at", "a one-off outage `START+DURATION` of the forward direction; repeatable"},
		{"ret-outage-at", "a one-off outage `START+DURATION` of the return direction; repeatable"},
	} {
		v := new([]string)
		fs.StringArrayVar(v, n.name, nil, n.usage)
		f.outageAt[n.name] = v
	}
	f.vals = map[string]any{}
	for _, p := range chanParams {
		for _, pre := range []string{"", "fwd-", "ret-"} {
			name, usage := pre+p.name, p.usage
			switch pre {
			case "fwd-":
				usage = "forward (ground to vehicle) only: " + usage
			case "ret-":
				usage = "return (vehicle to ground) only: " + usage
			}
			switch p.kind {
			case 'f':
				v := new(float64)
				fs.Float64Var(v, name, 0, usage)
				f.vals[name] = v
			case 'd':
				v := new(time.Duration)
				cli.DurationVar(fs, v, name, 0, usage)
				f.vals[name] = v
			case 's':
				v := new(int64)
				cli.SizeVar(fs, v, name, 0, usage)
				f.vals[name] = v
			case 'b':
				v := new(bool)
				fs.BoolVar(v, name, false, usage)
				f.vals[name] = v
			}
		}
	}
	fs.BoolVar(&f.ip, "ip", false, "IP mode: TUN devices in two network namespaces instead of UDP sockets")
	fs.StringVar(&f.nsA, "ns-a", link.DefaultNSA, "IP mode: the ground side's network namespace (created, deleted on exit)")
	fs.StringVar(&f.nsB, "ns-b", link.DefaultNSB, "IP mode: the vehicle side's network namespace (created, deleted on exit)")
	fs.StringVar(&f.addrA, "addr-a", link.DefaultAddrA.String(), "IP mode: the ground side's address")
	fs.StringVar(&f.addrB, "addr-b", link.DefaultAddrB.String(), "IP mode: the vehicle side's address")
	fs.StringVar(&f.dev, "dev", link.DefaultDev, "IP mode: the TUN device's name in both namespaces")
	fs.IntVar(&f.mtu, "mtu", 0, "IP mode: the devices' MTU (default: the profile's frame size, at least 576)")
	cli.VerboseFlag(c, &f.verbose)
	cli.JSONFlag(c, &f.json)
}

// spec builds the link from the profile and the flags given: schedule
// flags replace the profile's schedule fields, channel flags for both
// directions apply first, then those of one direction.
func (f *linkFlags) spec() (link.Spec, error) {
	s, err := link.Profile(f.profile)
	if err != nil {
		return s, cli.Usagef("--profile: %v", err)
	}
	given := f.fs.Changed
	if f.alwaysUp {
		s.Schedule = linksim.Schedule{}
	}
	sc := &s.Schedule
	for _, d := range []struct {
		name string
		dst  *time.Duration
		v    time.Duration
	}{{"pass-period", &sc.PassPeriod, f.passPeriod}, {"pass-up", &sc.PassUp, f.passUp}, {"outage-every", &sc.OutageEvery, f.outageEvery},
		{"outage-for", &sc.OutageFor, f.outageFor}, {"outage-offset", &sc.OutageOffset, f.outageOffset}} {
		if given(d.name) {
			*d.dst = d.v
		}
	}
	if given("lose-pass-every") {
		sc.LosePassEvery = f.losePassEvery
	}
	if given("return-odd-passes-down") {
		sc.ReturnOddPassesDown = f.returnOdd
	}
	for _, name := range []string{"outage-at", "fwd-outage-at", "ret-outage-at"} {
		for _, v := range *f.outageAt[name] {
			w, err := parseWindow(v)
			if err != nil {
				return s, cli.Usagef("--%s: %v", name, err)
			}
			if name != "ret-outage-at" {
				sc.ForwardOutages = append(sc.ForwardOutages, w)
			}
			if name != "fwd-outage-at" {
				sc.ReturnOutages = append(sc.ReturnOutages, w)
			}
		}
	}
	s.TimeScale = f.timeScale
	for _, pre := range []string{"", "fwd-", "ret-"} {
		for _, p := range chanParams {
			name := pre + p.name
			if !given(name) {
				continue
			}
			var v any
			switch x := f.vals[name].(type) {
			case *float64:
				v = *x
			case *time.Duration:
				v = *x
			case *int64:
				v = *x
			case *bool:
				v = *x
			}
			if pre != "ret-" {
				p.set(&s.Forward, v)
			}
			if pre != "fwd-" {
				p.set(&s.Return, v)
			}
		}
	}
	for _, c := range []*link.Channel{&s.Forward, &s.Return} {
		if c.GE.P > 0 && c.GE.LossBad == 0 && c.GE.LossGood == 0 {
			c.GE.LossBad = 1
		}
		if c.Reorder > 0 && c.ReorderDelay == 0 {
			c.ReorderDelay = 20 * time.Millisecond
		}
	}
	if err := s.Validate(); err != nil {
		return s, cli.Usagef("%v", err)
	}
	return s, nil
}

// parseWindow reads START+DURATION, two Go durations.
func parseWindow(v string) (linksim.Window, error) {
	a, b, ok := strings.Cut(v, "+")
	if !ok {
		return linksim.Window{}, fmt.Errorf("%q: want START+DURATION, e.g. 10m+5m", v)
	}
	start, err := time.ParseDuration(a)
	if err != nil || start < 0 {
		return linksim.Window{}, fmt.Errorf("%q: bad start", v)
	}
	d, err := time.ParseDuration(b)
	if err != nil || d <= 0 {
		return linksim.Window{}, fmt.Errorf("%q: bad duration", v)
	}
	return linksim.Window{Start: start, End: start + d}, nil
}

// linkDoc is the --json document of link: what ran and its counters.
type linkDoc struct {
	Profile   string     `json:"profile"`
	Seed      uint64     `json:"seed"`
	Mode      string     `json:"mode"` // udp or ip
	TimeScale float64    `json:"time_scale"`
	ListenA   string     `json:"listen_a,omitempty"`
	ListenB   string     `json:"listen_b,omitempty"`
	NSA       string     `json:"ns_a,omitempty"`
	NSB       string     `json:"ns_b,omitempty"`
	AddrA     string     `json:"addr_a,omitempty"`
	AddrB     string     `json:"addr_b,omitempty"`
	Seconds   float64    `json:"seconds"`
	Link      link.Spec  `json:"link"`
	Stats     link.Stats `json:"stats"`
}

func runLink(c *cobra.Command, f *linkFlags) error {
	ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
	spec, err := f.spec()
	if err != nil {
		return err
	}
	if f.interval <= 0 {
		return cli.Usagef("--interval %v: want more than 0", f.interval)
	}
	if f.runFor < 0 {
		return cli.Usagef("--for %v: want 0 or more", f.runFor)
	}
	seed := f.seed
	if !cli.Given(c, "seed") {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.BigEndian.Uint64(b[:])
	}
	log := cli.Logger(stderr, f.verbose)
	doc := linkDoc{Profile: spec.Name, Seed: seed, TimeScale: spec.TimeScale, Link: spec}
	var e *link.Emulator
	if f.ip {
		for _, n := range []string{"listen-a", "listen-b", "a", "b"} {
			if cli.Given(c, n) {
				return cli.Usagef("--%s is for UDP mode, not --ip", n)
			}
		}
		cfg := link.IPConfig{Spec: spec, Seed: seed, NSA: f.nsA, NSB: f.nsB, Dev: f.dev, MTU: f.mtu, Log: log}
		if cfg.AddrA, err = netip.ParsePrefix(f.addrA); err != nil {
			return cli.Usagef("--addr-a: %v", err)
		}
		if cfg.AddrB, err = netip.ParsePrefix(f.addrB); err != nil {
			return cli.Usagef("--addr-b: %v", err)
		}
		if e, err = link.NewIP(ctx, cfg); err != nil {
			return err
		}
		doc.Mode, doc.NSA, doc.NSB, doc.AddrA, doc.AddrB = "ip", f.nsA, f.nsB, cfg.AddrA.String(), cfg.AddrB.String()
	} else {
		for _, n := range []string{"ns-a", "ns-b", "addr-a", "addr-b", "dev", "mtu"} {
			if cli.Given(c, n) {
				return cli.Usagef("--%s is for --ip", n)
			}
		}
		if e, err = link.New(link.Config{Spec: spec, Seed: seed, ListenA: f.listenA, ListenB: f.listenB, A: f.a, B: f.b, Log: log}); err != nil {
			return err
		}
		doc.Mode, doc.ListenA, doc.ListenB = "udp", e.AddrA().String(), e.AddrB().String()
	}
	info := stdout
	if f.json {
		info = stderr
	}
	printLinkStart(info, f, doc)

	if f.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.runFor)
		defer cancel()
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var tick <-chan time.Time
	if f.verbose {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-done:
			doc.Seconds = time.Since(start).Seconds()
			doc.Stats = e.Stats()
			if err != nil {
				return err
			}
			if f.json {
				return cli.WriteJSON(stdout, doc)
			}
			fmt.Fprintf(stdout, "after %v:\n", time.Since(start).Round(time.Millisecond))
			printLinkStats(stdout, doc.Stats, e.Up())
			return nil
		case <-tick:
			fmt.Fprintf(stderr, "after %v:\n", time.Since(start).Round(time.Second))
			printLinkStats(stderr, e.Stats(), e.Up())
		}
	}
}

func printLinkStart(w io.Writer, f *linkFlags, d linkDoc) {
	s := d.Link
	scale := ""
	if s.TimeScale != 1 {
		scale = fmt.Sprintf(", schedule compressed %gx", s.TimeScale)
	}
	fmt.Fprintf(w, "hil link: profile %s, seed %d%s\n", s.Name, d.Seed, scale)
	for _, ch := range []struct {
		name string
		c    link.Channel
	}{{"forward", s.Forward}, {"return", s.Return}} {
		fmt.Fprintf(w, "  %-8s %s\n", ch.name+":", describeChannel(ch.c))
	}
	fmt.Fprintf(w, "  schedule: %s\n", describeSchedule(s.Schedule))
	if d.Mode == "ip" {
		fmt.Fprintf(w, "  ground side (A):  namespace %s, %s on %s\n", d.NSA, d.AddrA, f.dev)
		fmt.Fprintf(w, "  vehicle side (B): namespace %s, %s on %s\n", d.NSB, d.AddrB, f.dev)
		fmt.Fprintf(w, "  e.g. ip netns exec %s curl http://%s/ reaches a server started with ip netns exec %s\n",
			d.NSB, strings.Split(d.AddrA, "/")[0], d.NSA)
		return
	}
	endpoint := func(s string) string {
		if s == "" {
			return "the address it first sends from"
		}
		return s
	}
	fmt.Fprintf(w, "  ground side (A):  sends to %s; frames go to %s\n", d.ListenA, endpoint(f.a))
	fmt.Fprintf(w, "  vehicle side (B): sends to %s; frames go to %s\n", d.ListenB, endpoint(f.b))
}

func describeChannel(c link.Channel) string {
	var b strings.Builder
	if c.Rate > 0 {
		fmt.Fprintf(&b, "%g bit/s", c.Rate)
	} else {
		b.WriteString("unlimited rate")
	}
	fmt.Fprintf(&b, ", delay %v", c.Delay)
	if c.Jitter > 0 {
		fmt.Fprintf(&b, "+-%v", c.Jitter)
	}
	if c.MaxFrame > 0 {
		fmt.Fprintf(&b, ", frames <= %d B", c.MaxFrame)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", c.Loss}, {"corrupt", c.Corrupt}, {"truncate", c.Truncate}, {"dup", c.Duplicate}, {"reorder", c.Reorder}} {
		if p.v > 0 {
			fmt.Fprintf(&b, ", %s %g", p.name, p.v)
		}
	}
	if c.GE.P > 0 {
		fmt.Fprintf(&b, ", Gilbert-Elliott p %g r %g (loss %g/%g good/bad)", c.GE.P, c.GE.R, c.GE.LossGood, c.GE.LossBad)
	}
	if c.DropCorrupt {
		b.WriteString(", damaged frames dropped")
	}
	return b.String()
}

func describeSchedule(s linksim.Schedule) string {
	var parts []string
	if s.PassPeriod > 0 {
		parts = append(parts, fmt.Sprintf("up %v every %v", s.PassUp, s.PassPeriod))
	}
	if s.OutageEvery > 0 {
		parts = append(parts, fmt.Sprintf("down %v every %v from %v", s.OutageFor, s.OutageEvery, s.OutageOffset))
	}
	if s.ReturnOddPassesDown {
		parts = append(parts, "return link on even passes only")
	}
	if s.LosePassEvery > 0 {
		parts = append(parts, fmt.Sprintf("every %dth pass lost", s.LosePassEvery))
	}
	for _, o := range []struct {
		name string
		ws   []linksim.Window
	}{{"forward", s.ForwardOutages}, {"return", s.ReturnOutages}} {
		for _, w := range o.ws {
			parts = append(parts, fmt.Sprintf("%s down from %v to %v", o.name, w.Start, w.End))
		}
	}
	if len(parts) == 0 {
		return "always up"
	}
	return strings.Join(parts, ", ")
}

func printLinkStats(w io.Writer, s link.Stats, up link.LinkState) {
	for _, d := range []struct {
		name string
		st   link.DirStats
		up   bool
	}{{"forward", s.Forward, up.Forward}, {"return", s.Return, up.Return}} {
		st, state := d.st, "down"
		if d.up {
			state = "up"
		}
		fmt.Fprintf(w, "  %-8s %s; in %d (%s), delivered %d (%s); dropped: loss %d, queue %d, outage %d, corrupt %d, oversize %d; duplicated %d, reordered %d, corrupted %d, truncated %d; strangers %d, undeliverable %d\n",
			d.name+":", state, st.Frames, cli.FormatSize(st.Bytes), st.Delivered, cli.FormatSize(st.DeliveredBytes),
			st.Dropped.Loss, st.Dropped.Queue, st.Dropped.Outage, st.Dropped.Corrupt, st.Dropped.Oversize,
			st.Duplicated, st.Reordered, st.Corrupted, st.Truncated, st.Strangers, st.Undeliverable)
	}
}
