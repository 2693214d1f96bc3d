; Functions with hand-computed liveness (see tests/test_ir_analysis.py for the arithmetic).
declare void @ext()
declare void @use(i32)
declare void @llvm.donothing()

; max pressure 3 (a, b, c after %c); intervals a [0,2) b [0,3) c [1,2) d [2,3) e [3,4)
define i32 @straight(i32 %a, i32 %b) {
  %c = add i32 %a, %b
  %d = mul i32 %a, %c
  %e = sub i32 %d, %b
  ret i32 %e
}

; x and y live across @ext; z dies at @use; w crosses only an intrinsic: 2 values across calls
define i32 @crossing(i32 %x) {
  %y = add i32 %x, 1
  call void @ext()
  %z = add i32 %y, %x
  call void @use(i32 %z)
  %w = add i32 %y, 2
  call void @llvm.donothing()
  %s = add i32 %w, %y
  ret i32 %s
}

; One loop; n and inv are live around the back-edge (the phis' inputs are not);
; max pressure 5 between %cond and the br of %header.
define i32 @loop(i32 %n, i32 %k) {
entry:
  %inv = mul i32 %k, 3
  br label %header
header:
  %i = phi i32 [ 0, %entry ], [ %i.next, %latch ]
  %acc = phi i32 [ 0, %entry ], [ %acc.next, %latch ]
  %cond = icmp slt i32 %i, %n
  br i1 %cond, label %body, label %exit
body:
  %t = add i32 %acc, %inv
  br label %latch
latch:
  %acc.next = add i32 %t, %i
  %i.next = add i32 %i, 1
  br label %header
exit:
  ret i32 %acc
}

; Layout entry, right, left, join (LLVM's RPO visits the true successor first, so it finishes
; first). %p is only used in %left but its interval spans %right, where three values are live:
; exact pressure 3, interval overlap 4.
define i32 @diamond(i1 %c, i32 %a) {
entry:
  %p = add i32 %a, 1
  %q = add i32 %a, 2
  br i1 %c, label %left, label %right
left:
  %l = mul i32 %p, %p
  br label %join
right:
  %r1 = mul i32 %q, %q
  %r2 = add i32 %q, 7
  %r3 = add i32 %r1, %r2
  %r = add i32 %r3, %q
  br label %join
join:
  %m = phi i32 [ %l, %left ], [ %r, %right ]
  ret i32 %m
}

; Static allocas are frame slots: not counted. The loaded value and the argument are.
define i32 @frame(i32 %a) {
  %slot = alloca i32
  store i32 %a, ptr %slot
  %v = load i32, ptr %slot
  ret i32 %v
}
