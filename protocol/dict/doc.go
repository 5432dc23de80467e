// Package dict is bootorbit's command and telemetry dictionary, defined once
// in Go: the commands mission control sends to the updater (opcodes and typed
// arguments), the verification reason codes, the housekeeping telemetry
// packets and the events the vehicle sends back. flightd uses it to decode
// commands and build packets, groundd to encode commands and to decode,
// archive and serve telemetry, and the XTCE export (Yamcs, OpenC3 COSMOS)
// reads the same definitions.
//
// Every item carries what a mission control system needs: a stable numeric
// id, a name, a description, and for every argument and parameter a type
// with its size in bits, a unit, a valid range and, for enumerations, the
// labels of every value. The ids are part of the wire format: they never
// change meaning; new items take new ids.
//
// Values travel in protocol's envelopes: command arguments as one CBOR array
// in argument order (protocol.Command.Args, trailing optional arguments may
// be left out), telemetry as protocol.Params ([param id, value] pairs) and
// event arguments as protocol.Values in argument order. The helpers here
// convert between those and Values (a map from item name to Go value),
// checking every type, range, length and enumeration: a decoded Values holds
// uint64 for unsigned and enumerated items, int64, float64, bool, string or
// []byte for the others.
//
// The definitions are package variables shared by every user: treat them,
// and what the lookups return, as read-only.
//
// Every packet and event fits one 256-byte frame with its return-link MAC
// (protocol.ReturnAuth), and every command fits one with its signature;
// the package's tests check it with every value at its largest encoding.
package dict
