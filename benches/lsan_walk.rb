# The agent's own part of an LSan round at scale (BENCHMARKS.md, issue 16 item 4): the walk that
# finds the Ruby heap pages holding objects (src/run/agent.rb, Lsan#check), timed alone without
# LSan on about OBJECTS live objects, beside a variant that stores each page once and the bare
# ObjectSpace.each_object. Not a test.
#
#   ruby benches/lsan_walk.rb [OBJECTS]
require 'fiddle'
objects = Integer(ARGV[0] || 1_500_000)
KEPT = []
(objects / 10).times do |i|
  KEPT << Object.new << "s#{i}" << [i] << { a: i } << "t#{i}" << Object.new << [i, i] << "u#{i}" << Object.new << "v#{i}"
end
GC.start
size = (GC::INTERNAL_CONSTANTS[:HEAP_PAGE_SIZE] rescue nil) || 65_536
mask = ~(size - 1)
t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
pages = {}
ObjectSpace.each_object(BasicObject) { |o| pages[::Fiddle.dlwrap(o) & mask] = true }
t1 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
pages2 = {}; last = nil
ObjectSpace.each_object(BasicObject) { |o| p = ::Fiddle.dlwrap(o) & mask; if p != last; pages2[p] = true; last = p; end }
t2 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
n = 0
ObjectSpace.each_object(BasicObject) { |o| n += 1 }
t3 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
puts format("objects %d pages %d/%d  walk+hash %.2fs  walk+last %.2fs  bare walk %.2fs", n, pages.size, pages2.size, t1-t, t2-t1, t3-t2)
