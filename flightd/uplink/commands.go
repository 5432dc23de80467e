package uplink

import (
	"fmt"

	"github.com/bootorbit/bootorbit/protocol/dict"
)

// PlanOf returns the plan a transfer id belongs to (ok false: the engine
// holds no such transfer), for commands that name a transfer.
func (e *Engine) PlanOf(transfer uint64) (uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.xfers[transfer]
	return x.Plan, ok
}

// Abort abandons plan id (the transfer_abort command): its transfers are
// cancelled (the ground told), its staged data freed, its state failed. A
// plan installing, or whose supplement is installing (it reads this
// plan's bundle), cannot be aborted (ErrBusy).
func (e *Engine) Abort(id uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.plans[id]
	if p == nil {
		return fmt.Errorf("%w: %d", ErrUnknownPlan, id)
	}
	switch {
	case p.State == stInstalling || e.supplementInstalling(id):
		return fmt.Errorf("%w: plan %d", ErrBusy, id)
	case p.State == stBundle || p.State == stBaseMismatch:
	default:
		return fmt.Errorf("%w: plan %d is %s", ErrBadState, id, stateName(p.State))
	}
	e.abandonPlan(id, p, 0, "aborted by command")
	return e.process(e.now)
}

// Pause stops taking chunks of plan id's transfers (transfer_pause): they
// are dropped before the receiver; nothing journaled is lost.
func (e *Engine) Pause(id uint64) error { return e.setPaused(id, true) }

// Resume undoes Pause.
func (e *Engine) Resume(id uint64) error { return e.setPaused(id, false) }

func (e *Engine) setPaused(id uint64, paused bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.plans[id]
	if p == nil {
		return fmt.Errorf("%w: %d", ErrUnknownPlan, id)
	}
	if p.State != stBundle {
		return fmt.Errorf("%w: plan %d is %s", ErrBadState, id, stateName(p.State))
	}
	if p.Paused == paused {
		return nil
	}
	p.Paused = paused
	e.pendUp = append(e.pendUp, putPlan(id, p))
	return e.process(e.now)
}

// DeleteStaged frees the staged data of plan id, or of every plan when id
// is 0 (delete_staged): plans still receiving or waiting for a supplement
// are abandoned. A plan installing, or whose supplement is installing, is
// left alone (ErrBusy when named). It
// returns the bytes freed.
func (e *Engine) DeleteStaged(id uint64) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if id != 0 {
		p := e.plans[id]
		if p == nil {
			return 0, fmt.Errorf("%w: %d", ErrUnknownPlan, id)
		}
		if p.State == stInstalling || e.supplementInstalling(id) {
			return 0, fmt.Errorf("%w: plan %d", ErrBusy, id)
		}
	}
	before := e.st.Used()
	for pid, p := range e.plans {
		if (id != 0 && pid != id) || e.supplementInstalling(pid) {
			continue
		}
		switch p.State {
		case stBundle, stBaseMismatch:
			e.abandonPlan(pid, p, 0, "staged data deleted by command")
		case stInstalling:
		default:
			for xid, x := range e.xfers {
				if x.Plan == pid {
					e.dropXfer(xid)
				}
			}
		}
	}
	if err := e.process(e.now); err != nil {
		return 0, err
	}
	freed := before - e.st.Used()
	e.event(dict.EvStagedDeleted, fmt.Sprintf("%d staged bytes deleted", freed), dict.Values{"plan": id, "bytes": uint64(freed)})
	return freed, nil
}

// supplementInstalling says whether a supplement of plan id is installing:
// the install reads id's staged bundle, which must stay until it ends.
func (e *Engine) supplementInstalling(id uint64) bool {
	for _, q := range e.plans {
		if q.State != stInstalling {
			continue
		}
		if d, err := q.decoded(); err == nil && d.Supplement == id {
			return true
		}
	}
	return false
}
