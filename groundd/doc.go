// Package groundd is bootorbit's ground daemon as a library: the signed image
// store, the per-vehicle knowledge of what each slot holds, the delta planner,
// the uplink queue served pass by pass, and the CMD/TLM gateway. cmd/groundd is
// a thin main around it.
package groundd
