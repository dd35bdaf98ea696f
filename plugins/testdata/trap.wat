;; A validator that traps as soon as it is called (`unreachable`). The host
;; must report PluginError::Trap and stay usable.
;;
;; All hostile validators share this shape: the smallest component with a
;; correctly typed `cairn:policy/validation@0.1.0` export (so they pass the
;; load-time interface check) and a hand-written core function body.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    ;; cabi_realloc: a bump allocator, enough for the host to pass arguments.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    ;; A write-request flattens to 16 core values: op, in-txn, key (ptr,
    ;; len), range-end (tag, ptr, len), value (tag, ptr, len), lease (tag,
    ;; i64), principal (tag, ptr, len), revision (i64). A verdict is returned
    ;; through a pointer to its tag and payload.
    (func (export "validate")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i32 i64)
      (result i32)
      (unreachable)))
  (core instance $i (instantiate $m))

  (type $operation (enum "put" "delete-range"))
  (type $write-request (record
    (field "op" $operation)
    (field "in-txn" bool)
    (field "key" (list u8))
    (field "range-end" (option (list u8)))
    (field "value" (option (list u8)))
    (field "lease" (option s64))
    (field "principal" (option string))
    (field "revision" s64)))
  (type $verdict (variant (case "allow") (case "deny" string)))
  (func $validate (param "request" $write-request) (result $verdict)
    (canon lift (core func $i "validate")
      (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))

  ;; Exported functions must use named types: this inner component takes the
  ;; types and the function as imports and exports them under their WIT
  ;; names; an instance of it is the exported interface.
  (component $validation
    (type $op (enum "put" "delete-range"))
    (import "import-type-operation" (type $op-i (eq $op)))
    (type $wr (record
      (field "op" $op-i)
      (field "in-txn" bool)
      (field "key" (list u8))
      (field "range-end" (option (list u8)))
      (field "value" (option (list u8)))
      (field "lease" (option s64))
      (field "principal" (option string))
      (field "revision" s64)))
    (import "import-type-write-request" (type $wr-i (eq $wr)))
    (type $v (variant (case "allow") (case "deny" string)))
    (import "import-type-verdict" (type $v-i (eq $v)))
    (import "import-func-validate" (func $f (param "request" $wr-i) (result $v-i)))
    ;; Re-export each type, ascribing types that refer to the *exported*
    ;; names, so the instance's type is self-contained.
    (export $op-e "operation" (type $op-i))
    (type $wr-x (record
      (field "op" $op-e)
      (field "in-txn" bool)
      (field "key" (list u8))
      (field "range-end" (option (list u8)))
      (field "value" (option (list u8)))
      (field "lease" (option s64))
      (field "principal" (option string))
      (field "revision" s64)))
    (export $wr-e "write-request" (type $wr-i) (type (eq $wr-x)))
    (export $v-e "verdict" (type $v-i))
    (export "validate" (func $f) (func (param "request" $wr-e) (result $v-e))))
  (instance $exports (instantiate $validation
    (with "import-type-operation" (type $operation))
    (with "import-type-write-request" (type $write-request))
    (with "import-type-verdict" (type $verdict))
    (with "import-func-validate" (func $validate))))
  (export "cairn:policy/validation@0.1.0" (instance $exports))
)
