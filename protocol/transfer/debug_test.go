package transfer

import (
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/linksim"
)

func TestDebugStress(t *testing.T) {
	prof, _ := linksim.Named("stress")
	h := newHarness(t, prof, testSeed(t), 2<<20)
	h.sender.SetLink(h.sim.Now(), h.link())
	lastPass := -1
	var lastBytes int64
	var lastUp time.Duration
	for !h.sender.Done() {
		k := int(h.sim.Elapsed() / (98 * time.Minute))
		if k != lastPass {
			st := h.sim.Stats(linksim.Forward)
			d, tot := h.sender.Progress()
			t.Logf("pass %d start: sent %d bytes (+%d), up %v (+%v), done %d/%d, unknown %d inflight? missing heap %d nextNew %d stats %+v", k, st.Bytes, st.Bytes-lastBytes, st.UpTime, st.UpTime-lastUp, d, tot, h.sender.nUnknown, len(h.sender.missing), h.sender.nextNew, h.sender.Stats)
			lastBytes, lastUp = st.Bytes, st.UpTime
			lastPass = k
		}
		h.senderCuts = nil
		pr := h.sender.Stats.Presumed
		rj := h.resentJournaled
		defer func() {}()
		dl := earliest(h.doSender(), h.doReceiver())
		if h.sender.Stats.Presumed != pr || h.resentJournaled != rj {
			t.Logf("%v presumed %d resentJ %d lastHeard %v el %v link %+v", h.sim.Elapsed(), h.sender.Stats.Presumed, h.resentJournaled, h.sender.lastHeard, h.sender.clock.elapsed, h.sender.clock.link)
		}
		ev, ok := h.sim.Step(dl)
		if !ok {
			continue
		}
		if ev.Kind == linksim.EventDeliver && h.sim.Elapsed() > 9*time.Hour+52*time.Minute && h.sim.Elapsed() < 9*time.Hour+56*time.Minute {
			m, err := h.scfg.Codec.Decode(ev.Frame)
			if err == nil {
				if _, ok := m.(*protocol.Chunk); !ok {
					t.Logf("%v deliver %v %+v", h.sim.Elapsed(), ev.Dir, m)
				}
			} else {
				t.Logf("%v deliver %v err %v", h.sim.Elapsed(), ev.Dir, err)
			}
		}
		switch ev.Kind {
		case linksim.EventDeliver:
			if ev.Dir == linksim.Forward {
				if h.recv != nil {
					_ = h.recv.Step(h.sim.Now(), ev.Frame)
				}
			} else {
				_ = h.sender.Step(h.sim.Now(), ev.Frame)
			}
		case linksim.EventLink:
			l := LinkState{Forward: ev.State.Forward, Return: ev.State.Return}
			t.Logf("%v link %+v", h.sim.Elapsed(), l)
			h.sender.SetLink(h.sim.Now(), l)
			if h.recv != nil {
				h.recv.SetLink(h.sim.Now(), l)
			}
		case linksim.EventPower:
			t.Logf("%v power %v", h.sim.Elapsed(), ev.On)
			if ev.On {
				h.powerOn()
			} else {
				h.powerLoss()
			}
		}
	}
	t.Logf("end %v %+v", h.sim.Elapsed(), h.metrics())
}
