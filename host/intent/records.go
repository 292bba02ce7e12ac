package intent

import "context"

// Intent reads a plugin's intent.
func (db *DB) Intent(ctx context.Context, plugin string) (Item[Intent], bool, error) {
	return Get[Intent](ctx, db, IntentKey(plugin))
}

// Intents reads every plugin's intent, by plugin name.
func (db *DB) Intents(ctx context.Context) ([]Item[Intent], []error, error) {
	return List[Intent](ctx, db, PrefixIntent)
}

// Assignments reads every node's assignments, by node then plugin.
func (db *DB) Assignments(ctx context.Context) ([]Item[Assignment], []error, error) {
	return List[Assignment](ctx, db, PrefixAssign)
}

// NodeAssignments reads one node's assignments, by plugin.
func (db *DB) NodeAssignments(ctx context.Context, node string) ([]Item[Assignment], []error, error) {
	return List[Assignment](ctx, db, AssignPrefix(node))
}

// Singleton reads a singleton plugin's record; its ModRevision is the epoch.
func (db *DB) Singleton(ctx context.Context, plugin string) (Item[Singleton], bool, error) {
	return Get[Singleton](ctx, db, SingletonKey(plugin))
}

// Singletons reads every singleton record, by plugin.
func (db *DB) Singletons(ctx context.Context) ([]Item[Singleton], []error, error) {
	return List[Singleton](ctx, db, PrefixSingleton)
}

// Placements reads every placement diagnostic, by plugin.
func (db *DB) Placements(ctx context.Context) ([]Item[PlacementStatus], []error, error) {
	return List[PlacementStatus](ctx, db, PrefixPlacement)
}

// Placement reads a plugin's placement diagnostic.
func (db *DB) Placement(ctx context.Context, plugin string) (Item[PlacementStatus], bool, error) {
	return Get[PlacementStatus](ctx, db, PlacementKey(plugin))
}

// Observations reads every node's observations, by node then plugin.
func (db *DB) Observations(ctx context.Context) ([]Item[Observation], []error, error) {
	return List[Observation](ctx, db, PrefixObserve)
}

// NodeObservations reads one node's observations, by plugin.
func (db *DB) NodeObservations(ctx context.Context, node string) ([]Item[Observation], []error, error) {
	return List[Observation](ctx, db, ObservePrefix(node))
}
