;; A password authenticator for tests (not hostile): the committed example
;; plugins all abstain on passwords, and rebuilding them needs a wasm
;; toolchain, so the password path of the authenticate hook is exercised
;; with this hand-written component instead.
;;
;; - a bearer token: `abstain` (not this plugin's kind of credential);
;; - a name with the password "open-sesame": `authenticated(name)`;
;; - a name with an empty password: `abstain`;
;; - any other password: `refused("wrong password")`.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (data (i32.const 64) "open-sesame")
    (data (i32.const 96) "wrong password")
    ;; cabi_realloc: a bump allocator, enough for the host to pass arguments.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    ;; Whether the `len` bytes at `a` equal the `len` bytes at `b`.
    (func $same (param $a i32) (param $b i32) (param $len i32) (result i32)
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b)))
          (then (return (i32.const 0))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next))
      (unreachable))
    ;; A credential flattens to its case tag and the joined payload: for
    ;; `bearer-token` (ptr, len, -, -), for `password` (name ptr, name len,
    ;; password ptr, password len). An auth-outcome is returned through a
    ;; pointer to its tag (byte 0) and string (ptr at 4, len at 8); the
    ;; return area lives at offset 16.
    (func (export "authenticate")
      (param $tag i32) (param $name i32) (param $name_len i32)
      (param $pw i32) (param $pw_len i32)
      (result i32)
      (if (i32.or (i32.eqz (local.get $tag)) (i32.eqz (local.get $pw_len)))
        (then
          (i32.store8 (i32.const 16) (i32.const 2))
          (return (i32.const 16))))
      (if (i32.eq (local.get $pw_len) (i32.const 11))
        (then
          (if (call $same (local.get $pw) (i32.const 64) (i32.const 11))
            (then
              (i32.store8 (i32.const 16) (i32.const 0))
              (i32.store (i32.const 20) (local.get $name))
              (i32.store (i32.const 24) (local.get $name_len))
              (return (i32.const 16))))))
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.const 96))
      (i32.store (i32.const 24) (i32.const 14))
      (i32.const 16)))
  (core instance $i (instantiate $m))

  (type $password-credential (record (field "name" string) (field "password" string)))
  (type $credential (variant
    (case "bearer-token" string)
    (case "password" $password-credential)))
  (type $auth-outcome (variant
    (case "authenticated" string)
    (case "refused" string)
    (case "abstain")))
  (func $authenticate (param "credential" $credential) (result $auth-outcome)
    (canon lift (core func $i "authenticate")
      (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))

  ;; As in trap.wat: an inner component re-exports the types and the
  ;; function under their WIT names, so the exported instance is typed by
  ;; its own names.
  (component $authentication
    (type $pc (record (field "name" string) (field "password" string)))
    (import "import-type-password-credential" (type $pc-i (eq $pc)))
    (type $c (variant (case "bearer-token" string) (case "password" $pc-i)))
    (import "import-type-credential" (type $c-i (eq $c)))
    (type $o (variant (case "authenticated" string) (case "refused" string) (case "abstain")))
    (import "import-type-auth-outcome" (type $o-i (eq $o)))
    (import "import-func-authenticate" (func $f (param "credential" $c-i) (result $o-i)))
    (export $pc-e "password-credential" (type $pc-i))
    (type $c-x (variant (case "bearer-token" string) (case "password" $pc-e)))
    (export $c-e "credential" (type $c-i) (type (eq $c-x)))
    (export $o-e "auth-outcome" (type $o-i))
    (export "authenticate" (func $f) (func (param "credential" $c-e) (result $o-e))))
  (instance $exports (instantiate $authentication
    (with "import-type-password-credential" (type $password-credential))
    (with "import-type-credential" (type $credential))
    (with "import-type-auth-outcome" (type $auth-outcome))
    (with "import-func-authenticate" (func $authenticate))))
  (export "cairn:policy/authentication@0.1.0" (instance $exports))
)
