package acl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InitialManagementDescription is the description of the token made from
// the configured initial management secret.
const InitialManagementDescription = "Initial Management Token (from config)"

// ValidInitialManagement checks a configured initial management secret:
// a UUID, as every token's secret is.
func ValidInitialManagement(secret string) error {
	if !uuidRe.MatchString(secret) {
		return errors.New("the initial management token must be a UUID in lower case (make one with 'uuidgen' and keep it in a 0600 file)")
	}
	return nil
}

// ReadInitialManagementFile reads the initial management secret from
// path, which must be the agent's own and readable by no one else: it
// is a management token.
func ReadInitialManagementFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("acl_initial_management_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("acl_initial_management_file %s is mode %04o, readable by others: it holds a management token (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("acl_initial_management_file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if err := ValidInitialManagement(secret); err != nil {
		return "", fmt.Errorf("acl_initial_management_file %s: %w", path, err)
	}
	return secret, nil
}

// SetInitialManagement gives the resolver the cluster's initial
// management secret (Consul's acl.tokens.initial_management): while this
// node leads and the cluster's ACLs are not bootstrapped, it bootstraps
// them with a management token of that secret, and 'acl bootstrap' is
// refused on this node, so that no one takes the cluster first. Call it
// before Run.
func (r *Resolver) SetInitialManagement(secret string) { r.initial = secret }

// bootstrapInitial bootstraps the cluster's ACLs with the configured
// secret, if they are not yet.
func (r *Resolver) bootstrapInitial(ctx context.Context) {
	t := &Token{AccessorID: newID(), SecretSHA256: hashHex(r.initial), Description: InitialManagementDescription,
		Policies: []string{GlobalManagement}, CreateTime: time.Now().UTC().Truncate(time.Second)}
	ok, err := txn(ctx, r.st, append(tokenCompares(t), exists(keyBootstrap, false)),
		append(tokenOps(t), put(keyBootstrap, bootstrapRecord{AccessorID: t.AccessorID, At: t.CreateTime}))...)
	switch {
	case err != nil:
		r.log.Warn("bootstrapping ACLs with the configured initial management token; trying again", "error", err)
		return
	case ok:
		r.log.Info("ACLs bootstrapped with the configured initial management token", "accessor_id", t.AccessorID)
	}
	r.reload(ctx)
}

// errInitialManagement refuses 'acl bootstrap' on an agent given an
// initial management token.
var errInitialManagement = status.Error(codes.FailedPrecondition,
	"ACL bootstrap refused: this cluster's ACLs are bootstrapped from the agents' config (acl_initial_management); use that token")
