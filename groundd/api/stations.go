package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/bootorbit/bootorbit/groundd"
)

// StationsDaemon is the optional part of Daemon for several ground
// stations (groundd's Daemon has it; a fake without it answers 404): which
// station holds which vehicle, on what lease, and each station's last
// contact.
type StationsDaemon interface {
	Station() string
	Stations(ctx context.Context) ([]groundd.StationHold, error)
}

// StationsReply is GET /v1/stations: the station that answers and what
// every station sharing its store holds.
type StationsReply struct {
	Station  string                `json:"station"`
	Vehicles []groundd.StationHold `json:"vehicles"`
}

func (s *Server) stations(w http.ResponseWriter, r *http.Request) {
	sd, ok := s.d.(StationsDaemon)
	if !ok {
		s.fail(w, r, fmt.Errorf("%w: this daemon has no stations", groundd.ErrNotFound))
		return
	}
	hs, err := sd.Stations(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hs == nil {
		hs = []groundd.StationHold{}
	}
	writeJSON(w, http.StatusOK, StationsReply{Station: sd.Station(), Vehicles: hs})
}

// Stations returns which station holds which vehicle.
func (c *Client) Stations(ctx context.Context) (StationsReply, error) {
	var r StationsReply
	return r, c.do(ctx, http.MethodGet, "/v1/stations", nil, nil, &r)
}
