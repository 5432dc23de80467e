package uplink

import (
	"fmt"

	"github.com/bootorbit/bootorbit/flightd/uplink/staging"
	"github.com/bootorbit/bootorbit/slots"
)

// Problem is an inconsistency Check found.
type Problem struct {
	// Where names the record or file ("journal", "plan 7", "staging
	// 000000000000002a", "slot B").
	Where string `json:"where"`
	// What says what is wrong.
	What string `json:"what"`
}

func (p Problem) String() string { return p.Where + ": " + p.What }

// Check checks the journal and the staging against each other and against
// the slots: bbolt's own page check; every transfer record has its staged
// file and reservation, no larger file; no staged file without a record;
// every plan record decodes, is not above its ground key's replay floor,
// and names transfers that exist; a plan
// installing is the only one; the release recorded for a slot is the image
// the slot records, when that slot holds a verified image. It is what
// `flightd check` runs; after any power cut and a restart (Open) it finds
// nothing.
func (e *Engine) Check() []Problem {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ps []Problem
	add := func(where, format string, args ...any) {
		ps = append(ps, Problem{Where: where, What: fmt.Sprintf(format, args...)})
	}
	for _, err := range e.j.Check() {
		add("journal", "%v", err)
	}
	files, strays, err := e.st.Files()
	if err != nil {
		add("staging", "%v", err)
	}
	for _, s := range strays {
		add("staging "+s, "not a staging file")
	}
	res := e.st.Reserved()
	for id, x := range e.xfers {
		where := "transfer " + staging.Name(id)
		if e.plans[x.Plan] == nil && x.Kind != 'P' {
			add(where, "belongs to plan %d, which the journal does not hold", x.Plan)
		}
		if n, ok := files[id]; !ok {
			add(where, "no staged file")
		} else if n > int64(x.Size) {
			add(where, "staged file of %d bytes, the transfer has %d", n, x.Size)
		}
		if !e.inspect && res[id] != int64(x.Size) {
			add(where, "reserved %d bytes, the transfer has %d", res[id], x.Size)
		}
	}
	for id := range files {
		if _, ok := e.xfers[id]; !ok {
			add("staging "+staging.Name(id), "no transfer record names this file")
		}
	}
	installing := 0
	for id, p := range e.plans {
		where := fmt.Sprintf("plan %d", id)
		pl, err := p.decoded()
		if err != nil {
			add(where, "record does not decode: %v", err)
			continue
		}
		if pl.ID != id {
			add(where, "record holds plan %d", pl.ID)
		}
		if f, ok := e.floors[pl.KeyID]; !ok || f < id {
			// Open raises the floor (a repair a cut kept from being
			// written); until then an older plan would be accepted.
			add(where, "above the replay floor of ground key %d (%d, recorded: %v)", pl.KeyID, f, ok)
		}
		if p.State == stInstalling {
			installing++
		}
		if p.Bundle != 0 && (p.State == stBundle || p.State == stInstalling && !p.File) {
			if _, ok := e.xfers[p.Bundle]; !ok {
				add(where, "%s, but its bundle transfer %d has no record", stateName(p.State), p.Bundle)
			}
		}
		if p.State == stInstalling && p.Bundle == 0 && !p.File {
			add(where, "installing without a bundle")
		}
	}
	if installing > 1 {
		add("journal", "%d plans installing at once", installing)
	}
	if e.inst != nil {
		st := e.inst.Status()
		for _, s := range st.Slots {
			r, ok := e.slotRecs[s.ID]
			if !ok {
				continue
			}
			switch s.State {
			case slots.Written, slots.Pending, slots.Good:
				if s.Image != r.Manifest {
					add("slot "+string(s.ID), "holds %q, the journal records release %d (%s) there", s.Image, r.Version, r.Manifest)
				}
			}
		}
	}
	return ps
}
