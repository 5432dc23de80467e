package gateway_test

import (
	"errors"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/groundd/gateway"
	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// TestTelemetryArchive: telemetry and events, MAC-verified by a
// ReturnVerifier as the daemon does, are archived and come back decoded
// with names, units and labels, selected by vehicle, packet or event and
// time range.
func TestTelemetryArchive(t *testing.T) {
	e := newEnv(t)
	mk := protocol.MACKey{ID: 1, Key: make([]byte, protocol.MACKeyLen)}
	auth, err := protocol.NewReturnAuth(vehicleID, mk, 1)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := protocol.NewReturnVerifier(vehicleID, mk)
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := protocol.NewCodec(protocol.MinMaxFrame)
	// deliver sends m over the return link: MAC, frame, decode, verify,
	// then the gateway.
	deliver := func(m protocol.ReturnMessage) error {
		t.Helper()
		if err := auth.Sign(m); err != nil {
			t.Fatal(err)
		}
		frame, err := codec.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := codec.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		if err := ver.Verify(got); err != nil {
			t.Fatal(err)
		}
		e.advance(time.Second)
		return e.g.Receive(e.now, vehicleID, got)
	}
	ms := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	boot := func(at time.Duration, count int) *protocol.Telemetry {
		tm, err := dict.HKBoot.NewTelemetry(vehicleID, ms(at), uint32(count), dict.Values{
			"booted_slot": "a", "next_slot": "b", "trial": false, "reset_cause": "watchdog", "boot_count": count, "last_outcome": "good"})
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for i, at := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second} {
		if err := deliver(boot(at, 40+i)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := dict.HKStorage.NewTelemetry(vehicleID, ms(15*time.Second), 1, dict.Values{"staging_used": 100, "staging_quota": 1 << 30, "free": 5 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := deliver(st); err != nil {
		t.Fatal(err)
	}
	ev, err := dict.EvPlanRefused.NewEvent(vehicleID, ms(25*time.Second), 1, "release for other hardware", dict.Values{"plan": 9, "code": uint64(dict.CodeWrongHardware)})
	if err != nil {
		t.Fatal(err)
	}
	if err := deliver(ev); err != nil {
		t.Fatal(err)
	}

	// By packet and time range [15 s, 30 s).
	got, err := e.g.Telemetry(gateway.Query{Vehicle: vehicleID, ID: dict.HKBoot.ID, From: t0.Add(15 * time.Second), To: t0.Add(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Packet != "hk.boot" || !got[0].Time.Equal(t0.Add(20*time.Second)) || got[0].Error != "" {
		t.Fatalf("hk.boot in [15s, 30s): %+v", got)
	}
	want := map[string]gateway.Value{
		"booted_slot": {Name: "booted_slot", Value: uint64(1), Label: "a"},
		"reset_cause": {Name: "reset_cause", Value: uint64(2), Label: "watchdog"},
		"boot_count":  {Name: "boot_count", Value: uint64(41), Unit: "boots"},
		"trial":       {Name: "trial", Value: false},
	}
	for _, v := range got[0].Values {
		if w, ok := want[v.Name]; ok && v != w {
			t.Errorf("%s: %+v, want %+v", v.Name, v, w)
		}
	}
	if len(got[0].Values) != len(dict.HKBoot.Params) {
		t.Errorf("%d values, want %d", len(got[0].Values), len(dict.HKBoot.Params))
	}
	// Every packet of the vehicle, in vehicle time order.
	all, err := e.g.Telemetry(gateway.Query{Vehicle: vehicleID})
	if err != nil || len(all) != 4 || all[1].Packet != "hk.storage" || all[1].Values[0].Unit != "bytes" {
		t.Fatalf("all telemetry: %+v, %v", all, err)
	}
	if other, _ := e.g.Telemetry(gateway.Query{Vehicle: vehicleID + 1}); len(other) != 0 {
		t.Errorf("another vehicle's telemetry: %+v", other)
	}
	evs, err := e.g.Events(gateway.Query{Vehicle: vehicleID, ID: dict.EvPlanRefused.ID})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	if x := evs[0]; x.Event != "plan_refused" || x.Severity != "warning" || x.Text != "release for other hardware" ||
		len(x.Args) != 2 || x.Args[1].Label != "wrong_hardware" || x.Args[0].Value != uint64(9) {
		t.Errorf("event: %+v", x)
	}

	// A packet the dictionary does not describe is archived and reported.
	unknown := &protocol.Telemetry{Vehicle: vehicleID, Packet: 99, Params: protocol.Params{{ID: 1, Value: uint64(1)}}}
	if err := deliver(unknown); !errors.Is(err, gateway.ErrDecode) {
		t.Errorf("unknown packet: %v", err)
	}
	bad := &protocol.Telemetry{Vehicle: vehicleID, Packet: dict.HKBoot.ID, Params: protocol.Params{{ID: 200, Value: uint64(7)}}}
	if err := deliver(bad); !errors.Is(err, gateway.ErrDecode) {
		t.Errorf("value out of its enumeration: %v", err)
	}
	got, err = e.g.Telemetry(gateway.Query{From: e.now.Add(-2 * time.Second), To: e.now.Add(time.Second)})
	if err != nil || len(got) != 2 || got[0].Error == "" || got[1].Error == "" || got[0].PacketID != 99 {
		t.Fatalf("undecodable packets: %+v, %v", got, err)
	}
	// Without a vehicle time, the reception time.
	if !got[0].Time.Equal(got[0].Received) {
		t.Errorf("time %v, received %v", got[0].Time, got[0].Received)
	}
	// Another vehicle's id inside an authenticated message is refused.
	tm := boot(time.Minute, 1)
	tm.Vehicle = vehicleID + 1
	if err := e.g.Receive(e.now, vehicleID, tm); !errors.Is(err, gateway.ErrWrongVehicle) {
		t.Errorf("telemetry naming another vehicle: %v", err)
	}
	ev2 := *ev
	ev2.Vehicle = 0
	if err := e.g.Receive(e.now, vehicleID, &ev2); !errors.Is(err, gateway.ErrWrongVehicle) {
		t.Errorf("event naming another vehicle: %v", err)
	}
}
