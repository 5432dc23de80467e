package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bootorbit/bootorbit/groundd"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// ReorderRequest is the body of POST /v1/queue/{id}/reorder.
type ReorderRequest struct {
	// Position is where the uplink goes among the waiting uplinks, 0 first.
	Position int `json:"position"`
}

// CommandRequest is the body of POST /v1/vehicles/{id}/commands.
type CommandRequest struct {
	// Opcode is the command's name in the dictionary ("activate").
	Opcode string `json:"opcode"`
	// Args are its arguments by name: numbers, booleans, strings, an
	// enumeration's label or number, bytes as base64.
	Args map[string]json.RawMessage `json:"args,omitempty"`
}

// serveList answers the list that op returns, or its error.
func serveList[T any](s *Server, w http.ResponseWriter, r *http.Request, op func(context.Context) ([]T, error)) {
	v, err := op(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, v)
}

// writeList answers 200 with v: an empty list is [], never null.
func writeList[T any](w http.ResponseWriter, v []T) {
	if v == nil {
		v = []T{}
	}
	writeJSON(w, http.StatusOK, v)
}

// serveID applies op to the resource named by the path's {id} (an
// unsigned number of at most bits bits) and answers what it returns, or
// its error.
func serveID[T any](s *Server, w http.ResponseWriter, r *http.Request, bits int, op func(context.Context, uint64) (T, error)) {
	id, ok := pathUint(w, r, "id", bits)
	if !ok {
		return
	}
	v, err := op(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) queueList(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.d.QueueList)
}

func (s *Server) queueAdd(w http.ResponseWriter, r *http.Request) {
	var req groundd.UplinkRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Image == "" {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "image is required")
		return
	}
	if len(req.Image) > 1024 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "image reference longer than 1024 bytes")
		return
	}
	u, err := s.d.QueueAdd(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/queue/%d", u.ID))
	writeJSON(w, http.StatusCreated, u)
}

func (s *Server) queueShow(w http.ResponseWriter, r *http.Request) {
	serveID(s, w, r, 64, s.d.QueueShow)
}

func (s *Server) queueCancel(w http.ResponseWriter, r *http.Request) {
	serveID(s, w, r, 64, s.d.QueueCancel)
}

func (s *Server) queueReorder(w http.ResponseWriter, r *http.Request) {
	id, ok := pathUint(w, r, "id", 64)
	if !ok {
		return
	}
	var req ReorderRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Position < 0 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "position %d: want 0 or more", req.Position)
		return
	}
	u, err := s.d.QueueReorder(r.Context(), id, req.Position)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *Server) queueApprove(w http.ResponseWriter, r *http.Request) {
	serveID(s, w, r, 64, s.d.QueueApprove)
}

func (s *Server) commandCancel(w http.ResponseWriter, r *http.Request) {
	vid, ok := pathUint(w, r, "vid", 32)
	if !ok {
		return
	}
	serveID(s, w, r, 64, func(ctx context.Context, id uint64) (groundd.Command, error) {
		return s.d.CommandCancel(ctx, uint32(vid), id)
	})
}

func (s *Server) vehicles(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.d.Vehicles)
}

func (s *Server) vehicleShow(w http.ResponseWriter, r *http.Request) {
	serveID(s, w, r, 32, func(ctx context.Context, id uint64) (groundd.Vehicle, error) {
		return s.d.VehicleShow(ctx, uint32(id))
	})
}

// transfers lists the transfers in flight, or with ?uplink=ID every
// transfer of that uplink, done or not; ?vehicle=ID keeps one vehicle's.
func (s *Server) transfers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !onlyParams(w, q, "uplink", "vehicle") {
		return
	}
	var ts []groundd.Transfer
	var err error
	if q.Has("uplink") {
		id, e := strconv.ParseUint(q.Get("uplink"), 10, 64)
		if e != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "bad uplink %q: want a decimal number", q.Get("uplink"))
			return
		}
		ts, err = s.d.UplinkTransfers(r.Context(), id)
	} else {
		ts, err = s.d.Transfers(r.Context())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if q.Has("vehicle") {
		v, e := strconv.ParseUint(q.Get("vehicle"), 10, 32)
		if e != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "bad vehicle %q: want a decimal number", q.Get("vehicle"))
			return
		}
		kept := ts[:0]
		for _, t := range ts {
			if t.Vehicle == uint32(v) {
				kept = append(kept, t)
			}
		}
		ts = kept
	}
	writeList(w, ts)
}

func (s *Server) commandSend(w http.ResponseWriter, r *http.Request) {
	vid, ok := pathUint(w, r, "id", 32)
	if !ok {
		return
	}
	var req CommandRequest
	if !decode(w, r, &req) {
		return
	}
	def, found := dict.CommandByName(req.Opcode)
	if !found {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "no command %q in the dictionary", req.Opcode)
		return
	}
	args, err := ArgsFromJSON(def, req.Args)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "%v", err)
		return
	}
	c, err := s.d.SendCommand(r.Context(), uint32(vid), def.Name, args)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/commands/%d", c.ID))
	writeJSON(w, http.StatusAccepted, c)
}

func (s *Server) commandList(w http.ResponseWriter, r *http.Request) {
	vid, ok := pathUint(w, r, "id", 32)
	if !ok {
		return
	}
	// The daemon reads vehicle 0 as every vehicle: the vehicle must exist.
	if _, err := s.d.VehicleShow(r.Context(), uint32(vid)); err != nil {
		s.fail(w, r, err)
		return
	}
	cs, err := s.d.Commands(r.Context(), uint32(vid))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, cs)
}

func (s *Server) commandShow(w http.ResponseWriter, r *http.Request) {
	serveID(s, w, r, 64, s.d.CommandShow)
}

// telemetry answers a range query, or with follow=true streams the
// records as they arrive, one JSON document per line
// (application/x-ndjson), after those of the range if from is given.
func (s *Server) telemetry(w http.ResponseWriter, r *http.Request) {
	vid, ok := pathUint(w, r, "id", 32)
	if !ok {
		return
	}
	q := r.URL.Query()
	if !onlyParams(w, q, "from", "to", "name", "kind", "limit", "follow") {
		return
	}
	tq := telemetryQuery{Vehicle: uint32(vid), Name: q.Get("name"), Kind: q.Get("kind")}
	var err error
	if tq.From, err = queryTime(q, "from"); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "%v", err)
		return
	}
	if tq.To, err = queryTime(q, "to"); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "%v", err)
		return
	}
	if !tq.From.IsZero() && !tq.To.IsZero() && tq.To.Before(tq.From) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "to is before from")
		return
	}
	switch tq.Kind {
	case "", "tm", "event":
	default:
		writeError(w, http.StatusBadRequest, CodeBadRequest, "bad kind %q: want tm or event", tq.Kind)
		return
	}
	if len(tq.Name) > 64 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "name longer than 64 bytes")
		return
	}
	tq.Limit = DefaultTelemetryLimit
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > MaxTelemetryLimit {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "bad limit %q: want 1 to %d", q.Get("limit"), MaxTelemetryLimit)
			return
		}
		tq.Limit = n
	}
	follow := false
	if q.Has("follow") {
		if follow, err = strconv.ParseBool(q.Get("follow")); err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "bad follow %q: want true or false", q.Get("follow"))
			return
		}
	}
	if !follow {
		recs, err := s.telemetryRange(r.Context(), tq)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeList(w, recs)
		return
	}
	s.follow(w, r, tq)
}

// follow streams telemetry. It subscribes before it reads the range, so
// nothing arrives unseen between the two; records of the subscription
// that the range already held are skipped.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, tq telemetryQuery) {
	ctx := r.Context()
	select {
	case s.followers <- struct{}{}:
		defer func() { <-s.followers }()
	default:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "%d telemetry streams are open already; try again later", cap(s.followers))
		return
	}
	// The daemon reads vehicle 0 as every vehicle: the vehicle must exist.
	if _, err := s.d.VehicleShow(ctx, tq.Vehicle); err != nil {
		s.fail(w, r, err)
		return
	}
	ch, err := s.d.TelemetryFollow(ctx, tq.Vehicle)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var past []groundd.TelemetryRecord
	if !tq.From.IsZero() {
		if past, err = s.telemetryRange(ctx, tq); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	seen := map[recKey]bool{}
	for _, rec := range past {
		seen[keyOf(rec)] = true
		if enc.Encode(rec) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			if _, err := w.Write([]byte("\n")); err != nil || rc.Flush() != nil {
				return
			}
		case rec, ok := <-ch:
			if !ok {
				return
			}
			if !matches(tq, rec) {
				continue
			}
			if k := keyOf(rec); seen[k] {
				delete(seen, k)
				continue
			}
			if enc.Encode(rec) != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

type recKey struct {
	name string
	seq  uint32
	at   int64
}

func keyOf(r groundd.TelemetryRecord) recKey {
	return recKey{r.Kind + "/" + r.Name, r.Seq, r.Received.UnixNano()}
}

// telemetryQuery is a telemetry request's parameters.
type telemetryQuery struct {
	Vehicle    uint32
	From, To   time.Time
	Name, Kind string
	Limit      int
}

// telemetryRange asks the daemon for the range and keeps the records of
// the name and kind asked for. With a filter it reads MaxTelemetryLimit
// records, so that the limit counts the records kept, as far as that
// window goes.
func (s *Server) telemetryRange(ctx context.Context, q telemetryQuery) ([]groundd.TelemetryRecord, error) {
	n := q.Limit
	if q.Name != "" || q.Kind != "" {
		n = MaxTelemetryLimit
	}
	recs, err := s.d.TelemetryRange(ctx, q.Vehicle, q.From, q.To, n)
	if err != nil {
		return nil, err
	}
	kept := recs[:0]
	for _, r := range recs {
		if matches(q, r) && len(kept) < q.Limit {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

func matches(q telemetryQuery, r groundd.TelemetryRecord) bool {
	return r.Vehicle == q.Vehicle && (q.Name == "" || q.Name == r.Name) && (q.Kind == "" || q.Kind == r.Kind) &&
		(q.To.IsZero() || r.Received.Before(q.To))
}

// onlyParams refuses query parameters the endpoint does not know, so that
// a typo is an error rather than a silently wider answer.
func onlyParams(w http.ResponseWriter, q url.Values, known ...string) bool {
	for k := range q {
		if !contains(known, k) {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "unknown query parameter %q (known: %v)", k, known)
			return false
		}
	}
	return true
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// queryTime reads an RFC 3339 time parameter (absent: the zero time).
func queryTime(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad %s %q: want an RFC 3339 time such as 2026-12-07T08:00:00Z", name, v)
	}
	return t, nil
}
