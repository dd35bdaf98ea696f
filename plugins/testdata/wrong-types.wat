;; Exports the validation hook's interface name, but its `validate` takes and
;; returns a u32 instead of a write-request and a verdict. The host must
;; refuse it at load (PluginError::BadInterface), not at the first write.
(component
  (core module $m
    (func (export "validate") (param i32) (result i32) (local.get 0)))
  (core instance $i (instantiate $m))
  (func $validate (param "request" u32) (result u32)
    (canon lift (core func $i "validate")))
  (component $validation
    (import "import-func-validate" (func $f (param "request" u32) (result u32)))
    (export "validate" (func $f)))
  (instance $exports (instantiate $validation
    (with "import-func-validate" (func $validate))))
  (export "cairn:policy/validation@0.1.0" (instance $exports))
)
