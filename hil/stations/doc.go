// Package stations is the bench of several ground stations (issue 14): a
// three-member etcd cluster started on loopback, three groundd daemons on
// it as stations, and a real flightd process (hil/board's virtual board)
// behind one hil/link emulator per station, whose pass schedules alternate
// between the stations and overlap where two stations see the vehicle at
// once. The vehicle's single radio hears every station: an antenna relay
// between flightd and the three emulators sends what flightd transmits into
// every link (an emulator out of its pass drops it, as the sky would) and
// delivers to flightd what any link carries. The stations share nothing
// but etcd and a registry (Debian's docker-registry on loopback): each has
// its own state directory, pulls the images from the registry, and gets
// the bundles it did not plan from there (groundd's bundles in the
// registry).
//
// Its test (TestStations) is the "Done means": the uplink
// completes; every station that did not plan fetched the plan and bundle
// by digest; no chunk the vehicle reported journaled reaches it again; the
// final slot status is visible from every station; and the faults: a
// transmitting station killed mid-pass, two stations at once (frames
// counted per station at each emulator), the holder cut off from etcd
// while it has data to send (its forward frames stop within its lease
// time), and, with -long, an etcd member killed.
package stations
