; Loop structure with known answers (see tests/test_ir_analysis.py).

; Two nested loops: 2 loops, 2 back-edges.
define void @nested(i32 %n) {
entry:
  br label %outer
outer:
  %i = phi i32 [ 0, %entry ], [ %i.next, %outer.latch ]
  br label %inner
inner:
  %j = phi i32 [ 0, %outer ], [ %j.next, %inner ]
  %j.next = add i32 %j, 1
  %inner.more = icmp slt i32 %j.next, %n
  br i1 %inner.more, label %inner, label %outer.latch
outer.latch:
  %i.next = add i32 %i, 1
  %outer.more = icmp slt i32 %i.next, %n
  br i1 %outer.more, label %outer, label %exit
exit:
  ret void
}

; One loop header reached by two back-edges (a `continue`): 1 loop, 2 back-edges.
define void @two_latches(i32 %n) {
entry:
  br label %header
header:
  %i = phi i32 [ 0, %entry ], [ %i.a, %latch.a ], [ %i.b, %latch.b ]
  %odd = trunc i32 %i to i1
  br i1 %odd, label %latch.a, label %latch.b
latch.a:
  %i.a = add i32 %i, 1
  %more.a = icmp slt i32 %i.a, %n
  br i1 %more.a, label %header, label %exit
latch.b:
  %i.b = add i32 %i, 3
  %more.b = icmp slt i32 %i.b, %n
  br i1 %more.b, label %header, label %exit
exit:
  ret void
}

; No loop; two blocks that the entry never reaches.
define i32 @dead_block(i32 %x) {
entry:
  ret i32 %x
dead:
  %y = add i32 %x, 1
  br label %dead2
dead2:
  ret i32 %y
}
