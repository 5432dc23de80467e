package api

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/bootorbit/bootorbit/protocol/dict"
)

// ArgsFromJSON turns a command's JSON arguments into the Go values the
// dictionary takes (uint64, int64, float64, bool, string, []byte; an
// enumeration's label stays a string), and checks them against the
// command's definition: names, types, ranges, labels, required arguments.
// JSON numbers are read from their text, so a uint64 above 2^53 keeps
// every digit.
func ArgsFromJSON(c *dict.Command, raw map[string]json.RawMessage) (map[string]any, error) {
	if len(raw) > len(c.Args) {
		return nil, fmt.Errorf("api: %s takes %d arguments, got %d", c.Name, len(c.Args), len(raw))
	}
	out := make(map[string]any, len(raw))
	for name, msg := range raw {
		f := field(c, name)
		if f == nil {
			return nil, fmt.Errorf("api: %s has no argument %q (%s)", c.Name, name, argNames(c))
		}
		v, err := jsonValue(f, msg)
		if err != nil {
			return nil, fmt.Errorf("api: %s.%s: %v", c.Name, name, err)
		}
		out[name] = v
	}
	return out, checkArgs(c, out)
}

// ArgsFromStrings reads a command's arguments from NAME=VALUE words, as
// typed on a command line: numbers in decimal (or 0x hex), booleans as
// true/false, an enumeration by label or number, bytes in hex, text as
// is. It checks them as ArgsFromJSON does.
func ArgsFromStrings(c *dict.Command, words []string) (map[string]any, error) {
	out := make(map[string]any, len(words))
	for _, w := range words {
		name, val, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("api: argument %q: want NAME=VALUE (%s)", w, argNames(c))
		}
		f := field(c, name)
		if f == nil {
			return nil, fmt.Errorf("api: %s has no argument %q (%s)", c.Name, name, argNames(c))
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("api: %s: argument %q given twice", c.Name, name)
		}
		v, err := stringValue(f, val)
		if err != nil {
			return nil, fmt.Errorf("api: %s.%s: %v", c.Name, name, err)
		}
		out[name] = v
	}
	return out, checkArgs(c, out)
}

// checkArgs lets the dictionary check the values as it will when the
// command is built: a bad value is the caller's error (400), found before
// the command takes a sequence number.
func checkArgs(c *dict.Command, args map[string]any) error {
	if _, err := c.NewCommand(1, 1, args); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

func field(c *dict.Command, name string) *dict.Field {
	for i := range c.Args {
		if c.Args[i].Name == name {
			return &c.Args[i]
		}
	}
	return nil
}

func argNames(c *dict.Command) string {
	if len(c.Args) == 0 {
		return "it takes no arguments"
	}
	var b strings.Builder
	b.WriteString("its arguments: ")
	for i, f := range c.Args {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s", f.Name, f.Kind)
		if f.Optional {
			b.WriteString(", optional")
		}
		b.WriteString(")")
	}
	return b.String()
}

func jsonValue(f *dict.Field, msg json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	switch f.Kind {
	case dict.Bool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s, want true or false", jsonType(v))
	case dict.Uint, dict.Enum:
		if s, ok := v.(string); ok && f.Kind == dict.Enum {
			return s, nil
		}
		if n, ok := v.(json.Number); ok {
			return strconv.ParseUint(n.String(), 10, 64)
		}
		return nil, fmt.Errorf("%s, want an unsigned integer", jsonType(v))
	case dict.Int:
		if n, ok := v.(json.Number); ok {
			return strconv.ParseInt(n.String(), 10, 64)
		}
		return nil, fmt.Errorf("%s, want an integer", jsonType(v))
	case dict.Float:
		if n, ok := v.(json.Number); ok {
			return n.Float64()
		}
		return nil, fmt.Errorf("%s, want a number", jsonType(v))
	case dict.String:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s, want a string", jsonType(v))
	case dict.Bytes:
		if s, ok := v.(string); ok {
			return base64.StdEncoding.DecodeString(s)
		}
		return nil, fmt.Errorf("%s, want base64 text", jsonType(v))
	}
	return nil, fmt.Errorf("kind %v", f.Kind)
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

func stringValue(f *dict.Field, s string) (any, error) {
	switch f.Kind {
	case dict.Bool:
		return strconv.ParseBool(s)
	case dict.Uint, dict.Enum:
		if n, err := parseUint(s); err == nil {
			return n, nil
		}
		if f.Kind == dict.Enum {
			return s, nil
		}
		return nil, fmt.Errorf("%q, want an unsigned integer", s)
	case dict.Int:
		return strconv.ParseInt(s, 10, 64)
	case dict.Float:
		return strconv.ParseFloat(s, 64)
	case dict.String:
		return s, nil
	case dict.Bytes:
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%q, want hex", s)
		}
		return b, nil
	}
	return nil, fmt.Errorf("kind %v", f.Kind)
}

// parseUint reads decimal or 0x hex; never octal, so 010 is ten.
func parseUint(s string) (uint64, error) {
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		return strconv.ParseUint(h, 16, 64)
	}
	return strconv.ParseUint(s, 10, 64)
}
