package groundd

import "context"

// SetPlanHook makes every planning of d call hook before it computes the
// bundle (tests: a slow planning, on demand).
func SetPlanHook(d *Daemon, hook func(ctx context.Context)) { d.planHook = hook }
