package intent

import (
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/plughost/plughost/host/bundle"
	"github.com/plughost/plughost/store"
)

// ErrInvalidRecord means a record read from the store fails its checks: no
// node acts on it.
var ErrInvalidRecord = errors.New("invalid _sys record")

// RecordError is a refused record: its key, its mod revision and what is
// wrong.
type RecordError struct {
	Key         string
	ModRevision int64
	Reason      string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("record %q in %s is refused: %s; it is ignored (delete it with 'plughost store delete -ns %s %s'; its writer writes it again)",
		e.Key, store.SystemNamespace, e.Reason, store.SystemNamespace, e.Key)
}

// Unwrap makes a RecordError match ErrInvalidRecord.
func (e *RecordError) Unwrap() error { return ErrInvalidRecord }

// nodeNameRE is the agent's rule for -node (host/agent Config.Validate).
var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidNodeName reports whether name can be a node's name.
func ValidNodeName(name string) bool { return nodeNameRE.MatchString(name) }

// maxText bounds free text in a record (messages, errors, states).
const maxText = 4096

func checkPlugin(name string) error {
	if !bundle.ValidName(name) {
		return fmt.Errorf("plugin name %q is not valid", name)
	}
	return nil
}

func checkNode(name string) error {
	if !ValidNodeName(name) {
		return fmt.Errorf("node name %q is not valid", name)
	}
	return nil
}

func checkVersion(v string) error {
	if !bundle.ValidVersion(v) {
		return fmt.Errorf("version %q is not strict semver", v)
	}
	return nil
}

func checkRole(role string) error {
	switch role {
	case RoleNone, RoleActive, RoleStandby:
		return nil
	}
	return fmt.Errorf("role %q is not one of %q, %q or none", role, RoleActive, RoleStandby)
}

func checkText(what, s string) error {
	if len(s) > maxText {
		return fmt.Errorf("%s is %d bytes long, more than %d", what, len(s), maxText)
	}
	return nil
}

// Validate checks the intent. Its placement must name a mode and pass the
// checks of a manifest's (bundle.Placement.Validate: counts in range, a
// constraint that compiles within its limits); a spread left out is the
// default one.
func (r *Intent) Validate() error {
	if r.Placement.Mode == "" {
		return errors.Join(checkPlugin(r.Plugin), checkVersion(r.Version), errors.New("placement mode is empty"))
	}
	p := r.Placement
	if p.Spread == "" {
		p.SetDefaults()
	}
	return errors.Join(checkPlugin(r.Plugin), checkVersion(r.Version), p.Validate())
}

// Validate checks the assignment.
func (r *Assignment) Validate() error {
	errs := []error{checkNode(r.Node), checkPlugin(r.Plugin), checkVersion(r.Version), checkRole(r.Role)}
	if r.Epoch < 0 {
		errs = append(errs, fmt.Errorf("epoch %d is negative", r.Epoch))
	}
	if r.Epoch != 0 && r.Role != RoleActive {
		errs = append(errs, fmt.Errorf("epoch %d given to a %q instance; only an active one has an epoch", r.Epoch, r.Role))
	}
	return errors.Join(errs...)
}

// Validate checks the singleton record.
func (r *Singleton) Validate() error {
	errs := []error{checkPlugin(r.Plugin)}
	if r.Active != "" {
		errs = append(errs, checkNode(r.Active))
	}
	if r.Standby != "" {
		errs = append(errs, checkNode(r.Standby))
		if r.Standby == r.Active {
			errs = append(errs, fmt.Errorf("node %q is both active and standby", r.Active))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the placement diagnostic.
func (r *PlacementStatus) Validate() error {
	errs := []error{checkPlugin(r.Plugin), checkText("message", r.Message)}
	switch r.Severity {
	case SeverityError, SeverityWarning:
	default:
		errs = append(errs, fmt.Errorf("severity %q is not %q or %q", r.Severity, SeverityError, SeverityWarning))
	}
	if r.Wanted < 0 || r.Placed < 0 {
		errs = append(errs, fmt.Errorf("wanted %d, placed %d: counts cannot be negative", r.Wanted, r.Placed))
	}
	return errors.Join(errs...)
}

// maxServices bounds the services an observation lists.
const maxServices = 256

// Validate checks the observation.
func (r *Observation) Validate() error {
	errs := []error{checkNode(r.Node), checkPlugin(r.Plugin), checkRole(r.Role),
		checkText("state", r.State), checkText("last error", r.LastError)}
	if r.Version != "" { // a plugin that never started has none
		errs = append(errs, checkVersion(r.Version))
	}
	if r.Epoch < 0 || r.Restarts < 0 || r.InFlight < 0 {
		errs = append(errs, fmt.Errorf("epoch %d, restarts %d, in flight %d: cannot be negative", r.Epoch, r.Restarts, r.InFlight))
	}
	if r.Draining != "" {
		errs = append(errs, checkVersion(r.Draining))
	}
	if len(r.Services) > maxServices {
		errs = append(errs, fmt.Errorf("%d services listed, more than %d", len(r.Services), maxServices))
	}
	for _, s := range r.Services {
		// Each becomes a route of every node's router.
		if len(s) > maxText || !protoreflect.FullName(s).IsValid() {
			errs = append(errs, fmt.Errorf("service name %.64q is not a full protobuf name", s))
			break
		}
	}
	return errors.Join(errs...)
}
