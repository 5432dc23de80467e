// Package slots is the A/B slot model: slot states, slot backends (a directory
// holding an extracted root filesystem, or a raw device or file), safe
// extraction, and durable write-then-verify of the inactive slot.
package slots
