;; A valid component that is not a Cairn plugin: it exports an unrelated
;; function and none of the hooks. The host must refuse it at load
;; (PluginError::BadInterface) with a message naming the plugin.
(component
  (core module $m
    (func (export "answer") (result i32) (i32.const 42)))
  (core instance $i (instantiate $m))
  (func $answer (result u32) (canon lift (core func $i "answer")))
  (export "answer" (func $answer))
)
