package sdk

import "time"

// Txn is a transaction: when every compare of If holds, Then runs, else
// Else runs, atomically, as one write with one revision.
type Txn struct {
	// If are the conditions; all must hold. No conditions means Then runs.
	If []Compare
	// Then are the operations applied when every condition holds.
	Then []Op
	// Else are the operations applied when a condition fails.
	Else []Op
}

// CompareTarget is the part of a key a Compare looks at.
type CompareTarget int

const (
	// CompareValue compares the key's value with Compare.Value. A missing key
	// never equals a value.
	CompareValue CompareTarget = iota + 1
	// CompareModRevision compares the key's mod revision with Compare.Number
	// (0 for a missing key).
	CompareModRevision
	// CompareVersion compares the key's version with Compare.Number (0 for a
	// missing key).
	CompareVersion
	// CompareExists compares whether the key exists with Compare.Exists.
	CompareExists
)

// CompareOp is how a Compare relates the key's field to the operand.
type CompareOp int

const (
	// Equal holds when the field equals the operand; it is the zero value.
	Equal CompareOp = iota
	// NotEqual holds when the field differs from the operand.
	NotEqual
	// Greater holds when the field is greater than the operand.
	Greater
	// Less holds when the field is less than the operand.
	Less
)

// Compare is one condition of a transaction. The helpers ValueEquals,
// ModRevisionEquals, VersionEquals, Exists and Missing build the usual ones;
// set Op for the others.
type Compare struct {
	// Key is the key compared.
	Key string
	// Target is the part of the key compared.
	Target CompareTarget
	// Op relates the key's field to the operand; Equal by default.
	Op CompareOp
	// Value is the operand of CompareValue.
	Value []byte
	// Number is the operand of CompareModRevision and CompareVersion.
	Number int64
	// Exists is the operand of CompareExists.
	Exists bool
}

// ValueEquals holds when key exists and its value is value.
func ValueEquals(key string, value []byte) Compare {
	return Compare{Key: key, Target: CompareValue, Value: value}
}

// ModRevisionEquals holds when key's mod revision is rev; 0 holds for a
// missing key.
func ModRevisionEquals(key string, rev int64) Compare {
	return Compare{Key: key, Target: CompareModRevision, Number: rev}
}

// VersionEquals holds when key's version is version; 0 holds for a missing
// key.
func VersionEquals(key string, version int64) Compare {
	return Compare{Key: key, Target: CompareVersion, Number: version}
}

// Exists holds when key exists.
func Exists(key string) Compare {
	return Compare{Key: key, Target: CompareExists, Exists: true}
}

// Missing holds when key does not exist.
func Missing(key string) Compare {
	return Compare{Key: key, Target: CompareExists, Exists: false}
}

// OpKind is what an Op does.
type OpKind int

const (
	// OpPut writes Op.Key with Op.Value and Op.TTL.
	OpPut OpKind = iota + 1
	// OpDelete removes Op.Key.
	OpDelete
	// OpGet reads Op.Key.
	OpGet
	// OpDeleteRange removes every key that starts with Op.Key.
	OpDeleteRange
)

// Op is one operation of a transaction branch. PutOp, DeleteOp, GetOp and
// DeleteRangeOp build them.
type Op struct {
	// Kind is what the operation does.
	Kind OpKind
	// Key is the key, or the prefix of OpDeleteRange.
	Key string
	// Value is the value of OpPut.
	Value []byte
	// TTL makes the key of OpPut expire this long after the write.
	TTL time.Duration
}

// PutOp writes key; set TTL on the result for a key that expires.
func PutOp(key string, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// DeleteOp removes key.
func DeleteOp(key string) Op { return Op{Kind: OpDelete, Key: key} }

// GetOp reads key.
func GetOp(key string) Op { return Op{Kind: OpGet, Key: key} }

// DeleteRangeOp removes every key that starts with prefix.
func DeleteRangeOp(prefix string) Op { return Op{Kind: OpDeleteRange, Key: prefix} }

// TxnResult is the outcome of a transaction.
type TxnResult struct {
	// Succeeded is true when every compare held and Then ran; false when
	// Else ran.
	Succeeded bool
	// Revision is the revision of the transaction.
	Revision int64
	// Results are the outcomes of the branch that ran, one per Op, in order.
	Results []OpResult
}

// OpResult is the outcome of one Op.
type OpResult struct {
	// KV is the key read by OpGet or written by OpPut.
	KV KV
	// Found is true when KV holds a key: the one OpGet read (false for a
	// missing key) or OpPut wrote.
	Found bool
	// Deleted counts the keys removed by OpDelete or OpDeleteRange.
	Deleted int64
}
