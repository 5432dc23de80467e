package groundd

import (
	"fmt"

	"github.com/bootorbit/bootorbit/protocol/link"
)

// Link is a link to a vehicle: protocol/link's interface. Send loses the
// frame when the link is down; Recv blocks for the next frame.
type Link = link.Link

// openLink opens the link of vehicle vc from its configuration.
func openLink(vc VehicleConfig, maxFrame int) (Link, error) {
	name := vc.Link.Name
	if name == "" {
		name = fmt.Sprintf("vehicle-%d", vc.ID)
		if len(name) > 16 {
			name = name[:16]
		}
	}
	l, err := link.Open(link.Config{Name: name, Kind: vc.Link.Kind, Listen: vc.Link.Listen, Peer: vc.Link.Peer,
		Device: vc.Link.Device, Baud: vc.Link.Baud, MaxFrame: maxFrame})
	if err != nil {
		return nil, fmt.Errorf("groundd: vehicle %d: %w", vc.ID, err)
	}
	return l, nil
}
