package acl

import (
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// kind is what a permission is about.
type kind uint8

const (
	kindManagement kind = iota // the global-management policy
	kindAnyToken               // any valid token
	kindNone                   // no token: ACL bootstrap alone
	kindOperator               // operator = "read"|"write"
	kindACL                    // acl = "read"|"write"
	kindPlugin                 // plugin "NAME", NAME from the request's name
	kindNamespace              // namespace "NS", NS from the request's namespace
)

// Permission is what a call to one method needs.
type Permission struct {
	kind  kind
	level Level
	// filter, for a listing, drops from the response what the token may
	// not read.
	filter func(a *Authorizer, resp any)
}

// Permissions a method may need.
var (
	management  = Permission{kind: kindManagement}
	anyToken    = Permission{kind: kindAnyToken}
	noToken     = Permission{kind: kindNone}
	operator    = func(l Level) Permission { return Permission{kind: kindOperator, level: l} }
	aclLevel    = func(l Level) Permission { return Permission{kind: kindACL, level: l} }
	pluginLevel = func(l Level) Permission { return Permission{kind: kindPlugin, level: l} }
	namespace   = func(l Level) Permission { return Permission{kind: kindNamespace, level: l} }
)

// methods is what each of the agent's API methods needs: the one place to
// extend when an RPC is added. A method of one of the agent's own services
// that is not here needs the global-management policy. Calls to plugins'
// services are not here: they need plugin "NAME" { policy = "call" }.
var methods = map[string]Permission{
	operatorv1.OperatorService_GetAgentInfo_FullMethodName:    anyToken,
	operatorv1.OperatorService_AddBundle_FullMethodName:       management,
	operatorv1.OperatorService_ListPlugins_FullMethodName:     {kind: kindAnyToken, filter: filterPlugins},
	operatorv1.OperatorService_GetPluginStatus_FullMethodName: pluginLevel(Read),
	operatorv1.OperatorService_ListVersions_FullMethodName:    pluginLevel(Read),
	operatorv1.OperatorService_ListEvents_FullMethodName:      pluginLevel(Read),
	operatorv1.OperatorService_GetHistory_FullMethodName:      pluginLevel(Read),
	operatorv1.OperatorService_PinVersion_FullMethodName:      pluginLevel(Write),
	operatorv1.OperatorService_UnpinVersion_FullMethodName:    pluginLevel(Write),
	operatorv1.OperatorService_RollbackPlugin_FullMethodName:  pluginLevel(Write),
	operatorv1.OperatorService_RestartPlugin_FullMethodName:   pluginLevel(Write),
	operatorv1.OperatorService_ListMembers_FullMethodName:     operator(Read),
	operatorv1.OperatorService_ListRaftPeers_FullMethodName:   operator(Read),
	operatorv1.OperatorService_RemoveRaftPeer_FullMethodName:  operator(Write),
	// Nodes (area: nodes).
	operatorv1.OperatorService_ListNodes_FullMethodName:          operator(Read),
	operatorv1.OperatorService_SetNodeEligibility_FullMethodName: operator(Write),
	// Rollouts (area: surface): reading them is the operator's; a request
	// on one is a change of the plugin's versions, as a pin is.
	operatorv1.OperatorService_ListRollouts_FullMethodName:  operator(Read),
	operatorv1.OperatorService_GetRollout_FullMethodName:    operator(Read),
	operatorv1.OperatorService_WatchRollout_FullMethodName:  operator(Read),
	operatorv1.OperatorService_PauseRollout_FullMethodName:  pluginLevel(Write),
	operatorv1.OperatorService_ResumeRollout_FullMethodName: pluginLevel(Write),
	operatorv1.OperatorService_AbortRollout_FullMethodName:  pluginLevel(Write),
	// The keyring's listing holds the gossip keys themselves: whoever reads
	// them can join the gossip, so it needs what changing them needs.
	operatorv1.OperatorService_ListGossipKeys_FullMethodName:   operator(Write),
	operatorv1.OperatorService_InstallGossipKey_FullMethodName: operator(Write),
	operatorv1.OperatorService_UseGossipKey_FullMethodName:     operator(Write),
	operatorv1.OperatorService_RemoveGossipKey_FullMethodName:  operator(Write),

	storev1.StoreService_Get_FullMethodName:          namespace(Read),
	storev1.StoreService_List_FullMethodName:         namespace(Read),
	storev1.StoreService_Watch_FullMethodName:        namespace(Read),
	storev1.StoreService_Put_FullMethodName:          namespace(Write),
	storev1.StoreService_Delete_FullMethodName:       namespace(Write),
	storev1.StoreService_DeleteRange_FullMethodName:  namespace(Write),
	storev1.StoreService_Txn_FullMethodName:          namespace(Write),
	storev1.StoreAdminService_Backup_FullMethodName:  management,
	storev1.StoreAdminService_Restore_FullMethodName: management,

	aclv1.ACLService_Bootstrap_FullMethodName:    noToken,
	aclv1.ACLService_CreateToken_FullMethodName:  aclLevel(Write),
	aclv1.ACLService_DeleteToken_FullMethodName:  aclLevel(Write),
	aclv1.ACLService_CreatePolicy_FullMethodName: aclLevel(Write),
	aclv1.ACLService_DeletePolicy_FullMethodName: aclLevel(Write),
	aclv1.ACLService_ListTokens_FullMethodName:   aclLevel(Read),
	aclv1.ACLService_ReadToken_FullMethodName:    aclLevel(Read),
	aclv1.ACLService_ListPolicies_FullMethodName: aclLevel(Read),
	aclv1.ACLService_ReadPolicy_FullMethodName:   aclLevel(Read),

	// Reflection lists and describes the services a caller may call.
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      anyToken,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": anyToken,
}

// filterPlugins keeps the plugins the token may read.
func filterPlugins(a *Authorizer, resp any) {
	r, ok := resp.(*operatorv1.ListPluginsResponse)
	if !ok || a.Management() {
		return
	}
	kept := r.Plugins[:0]
	for _, p := range r.Plugins {
		if a.Plugin(p.GetName()) >= Read {
			kept = append(kept, p)
		}
	}
	r.Plugins = kept
}

// what says in words what a permission allows, for messages.
func (p Permission) what(target string) string {
	switch p.kind {
	case kindOperator:
		return `operator = "` + p.level.String() + `"`
	case kindACL:
		return `acl = "` + p.level.String() + `"`
	case kindPlugin:
		return `plugin "` + target + `" { policy = "` + p.level.String() + `" }`
	case kindNamespace:
		if target == SystemNamespace {
			return "the global-management policy (the " + SystemNamespace + " namespace is management's alone)"
		}
		return `namespace "` + target + `" { policy = "` + p.level.String() + `" }`
	}
	return "the global-management policy"
}
