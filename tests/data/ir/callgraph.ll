; Call graph with known SCCs and heights (see tests/test_ir_analysis.py).
;   leaf            height 0
;   a <-> b         one SCC, calls leaf: height 1
;   self -> self    self-recursive, calls leaf: height 1
;   with_invoke     invokes leaf: height 1
;   top             calls a and self, plus one external, intrinsic, indirect and inline-asm call: height 2
;   top2            calls top twice: height 3
declare void @ext()
declare i32 @llvm.smax.i32(i32, i32)
declare i32 @__gxx_personality_v0(...)

define internal i32 @leaf(i32 %x) {
  %y = add i32 %x, 1
  ret i32 %y
}

define i32 @a(i32 %n) {
entry:
  %stop = icmp eq i32 %n, 0
  br i1 %stop, label %done, label %recurse
recurse:
  %m = sub i32 %n, 1
  %r = call i32 @b(i32 %m)
  br label %done
done:
  %v = phi i32 [ 0, %entry ], [ %r, %recurse ]
  %w = call i32 @leaf(i32 %v)
  ret i32 %w
}

define i32 @b(i32 %n) {
  %r = call i32 @a(i32 %n)
  ret i32 %r
}

define i32 @self(i32 %n) {
entry:
  %stop = icmp sle i32 %n, 0
  br i1 %stop, label %base, label %recurse
base:
  %l = call i32 @leaf(i32 %n)
  ret i32 %l
recurse:
  %m = sub i32 %n, 1
  %r = call i32 @self(i32 %m)
  ret i32 %r
}

define i32 @with_invoke(i32 %n) personality ptr @__gxx_personality_v0 {
entry:
  %r = invoke i32 @leaf(i32 %n) to label %ok unwind label %lpad
ok:
  ret i32 %r
lpad:
  %lp = landingpad { ptr, i32 } cleanup
  ret i32 0
}

define i32 @top(i32 %n, ptr %fn) {
  %x = call i32 @a(i32 %n)
  %y = call i32 @self(i32 %x)
  call void @ext()
  %z = call i32 @llvm.smax.i32(i32 %x, i32 %y)
  %i = call i32 %fn(i32 %z)
  call void asm sideeffect "nop", ""()
  ret i32 %i
}

define i32 @top2(i32 %n) {
  %x = call i32 @top(i32 %n, ptr @leaf)
  %y = call i32 @top(i32 %x, ptr @leaf)
  ret i32 %y
}
