package groundd

import (
	"context"
	"fmt"
	"time"

	"github.com/bootorbit/bootorbit/groundd/store"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// CommandTimeout is how long a command may go without its final report
// before it is timed out (visibly: the stage says so).
const CommandTimeout = 2 * time.Minute

// SendCommand signs a command for vehicle and queues it: it goes out at the
// vehicle's next Poll with the link up. The command's sequence number comes
// from the store's counter, so no two commands, across restarts or
// stations, share one (the vehicle's replay window would drop the second).
func (d *Daemon) SendCommand(ctx context.Context, vehicle uint32, opcode string, args map[string]any) (Command, error) {
	s, ok := d.sessionOf(vehicle)
	if !ok {
		return Command{}, fmt.Errorf("%w: vehicle %d", ErrNotFound, vehicle)
	}
	def, ok := dict.CommandByName(opcode)
	if !ok {
		return Command{}, fmt.Errorf("%w: no command %q", ErrInvalid, opcode)
	}
	seq, err := d.st.Next(ctx, fmt.Sprintf("cmdseq/%d/%d", vehicle, d.cfg.GroundKeyID))
	if err != nil {
		return Command{}, err
	}
	pc, err := def.NewCommand(vehicle, seq, dict.Values(args))
	if err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := protocol.SignCommand(pc, protocol.KeyID(d.cfg.GroundKeyID), d.groundKey); err != nil {
		return Command{}, err
	}
	frame, err := d.codec.Encode(pc)
	if err != nil {
		return Command{}, fmt.Errorf("groundd: command: %w", err)
	}
	frame, err = d.seal(s, frame)
	if err != nil {
		return Command{}, err
	}
	id, err := d.st.Next(ctx, "command")
	if err != nil {
		return Command{}, err
	}
	now := d.now().UTC()
	c := Command{ID: id, Vehicle: vehicle, Opcode: opcode, Args: args, Seq: seq, Stage: CmdQueued, Created: now, Updated: now}
	if err := d.saveCommand(ctx, c); err != nil {
		return Command{}, err
	}
	d.mu.Lock()
	s.pending = append(s.pending, frameOut{frame: frame})
	d.mu.Unlock()
	d.log.Info("groundd: command queued", "vehicle", vehicle, "command", id, "opcode", opcode, "seq", seq)
	return c, nil
}

func (d *Daemon) saveCommand(ctx context.Context, c Command) error {
	return updateJSON(ctx, d.st, keyCommand(c.ID), func(v *Command, _ bool) error {
		*v = c
		return nil
	})
}

// CommandShow returns a command and its stage.
func (d *Daemon) CommandShow(ctx context.Context, id uint64) (Command, error) {
	c, _, err := getJSON[Command](ctx, d.st, keyCommand(id))
	return c, err
}

// Commands returns the commands sent to vehicle (0: to every vehicle),
// oldest first.
func (d *Daemon) Commands(ctx context.Context, vehicle uint32) ([]Command, error) {
	cs, err := listJSON[Command](ctx, d.st, "command/")
	if err != nil {
		return nil, err
	}
	var out []Command
	for _, c := range cs {
		if vehicle == 0 || c.Vehicle == vehicle {
			out = append(out, c)
		}
	}
	return out, nil
}

func commandFinal(st CommandStage) bool {
	switch st {
	case CmdCompleted, CmdFailed, CmdRejected, CmdTimedOut:
		return true
	}
	return false
}

// applyVerification moves a command through its stages from the vehicle's
// authenticated report.
func (d *Daemon) applyVerification(ctx context.Context, s *session, now time.Time, v *protocol.Verification) {
	cs, err := d.Commands(ctx, s.cfg.ID)
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Seq != v.Seq || commandFinal(c.Stage) {
			continue
		}
		_ = updateJSON(ctx, d.st, keyCommand(c.ID), func(x *Command, _ bool) error {
			if commandFinal(x.Stage) {
				return store.ErrSkip
			}
			switch v.Stage {
			case protocol.StageAccepted:
				x.Stage = CmdAccepted
			case protocol.StageRejected:
				x.Stage = CmdRejected
			case protocol.StageStarted:
				x.Stage = CmdStarted
			case protocol.StageProgress:
				x.Stage = CmdProgress
			case protocol.StageCompleted:
				x.Stage = CmdCompleted
			case protocol.StageFailed:
				x.Stage = CmdFailed
			}
			if v.Code != 0 {
				x.Code, x.Reason = uint16(v.Code), reasonLabel(v.Code)
			}
			x.Updated = now.UTC()
			return nil
		})
		d.log.Info("groundd: command report", "vehicle", s.cfg.ID, "command", c.ID, "stage", v.Stage.String(), "code", v.Code)
		return
	}
}

// checkCommands marks sent the commands that went out and times out those
// without a final report for CommandTimeout.
func (d *Daemon) checkCommands(ctx context.Context, s *session, now time.Time) error {
	cs, err := d.Commands(ctx, s.cfg.ID)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if commandFinal(c.Stage) {
			continue
		}
		if now.Sub(c.Created) >= CommandTimeout {
			c.Stage, c.Updated = CmdTimedOut, now.UTC()
			if err := d.saveCommand(ctx, c); err != nil {
				return err
			}
			d.log.Warn("groundd: command timed out", "vehicle", s.cfg.ID, "command", c.ID, "opcode", c.Opcode)
		} else if c.Stage == CmdQueued && s.linkUp {
			c.Stage, c.Updated, c.Attempts = CmdSent, now.UTC(), c.Attempts+1
			if err := d.saveCommand(ctx, c); err != nil {
				return err
			}
		}
	}
	return nil
}
