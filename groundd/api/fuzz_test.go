package api_test

import (
	"encoding/json"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/api"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// FuzzArgsFromJSON: a command's arguments come from the network. Whatever
// the JSON, ArgsFromJSON returns an error or values the dictionary builds
// a command from.
func FuzzArgsFromJSON(f *testing.F) {
	f.Add(uint8(5), []byte(`{"slot":"b","attempts":3}`))
	f.Add(uint8(5), []byte(`{"slot":2,"attempts":9,"not_before":1700000000000}`))
	f.Add(uint8(10), []byte(`{"slot":"c"}`))
	f.Add(uint8(2), []byte(`{"id":18446744073709551615,"kind":"plan"}`))
	f.Add(uint8(10), []byte(`{"plan":-1}`))
	f.Add(uint8(0), []byte(`{"x":[1,2,{"y":null}]}`))
	f.Add(uint8(5), []byte(`{"slot":"b","attempts":3.0e0}`))
	cmds := dict.Commands()
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		c := cmds[int(op)%len(cmds)]
		var raw map[string]json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			return
		}
		args, err := api.ArgsFromJSON(c, raw)
		if err != nil {
			return
		}
		if _, err := c.NewCommand(7, 1, args); err != nil {
			t.Fatalf("%s: accepted %s, but the dictionary refuses it: %v", c.Name, body, err)
		}
	})
}
