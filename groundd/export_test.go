package groundd

import "context"

// SetPlanHook makes every planning of d call hook before it computes the
// bundle (tests: a slow planning, on demand).
func SetPlanHook(d *Daemon, hook func(ctx context.Context)) { d.planHook = hook }

// PlanningRuns says whether a planning of vehicle runs in the background.
func PlanningRuns(d *Daemon, vehicle uint32) bool {
	d.plans.mu.Lock()
	defer d.plans.mu.Unlock()
	pp := d.plans.m[vehicle]
	return pp != nil && pp.running
}
