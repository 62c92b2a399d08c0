# Generates large CRuby heap dumps for benches/heap.sh (never committed; cached in benches/data/).
#
#   ruby benches/heap_gen.rb big OUT.json OBJECTS
#     one traced dump holding about OBJECTS live objects of assorted kinds
#   ruby benches/heap_gen.rb triple PREFIX OBJECTS
#     PREFIX-a.json, PREFIX-b.json, PREFIX-c.json: OBJECTS allocations kept for good, then dump A;
#     OBJECTS more (half kept), dump B; OBJECTS more again with half of B's survivors dropped,
#     dump C. Each allocation round makes about 1.2 objects per unit of OBJECTS.
require "objspace"

class Order
  def initialize(id, note)
    @id = id
    @note = note
    @items = [id, id + 1]
  end
end

Line = Struct.new(:sku, :qty)

# One batch of `count` allocations, a mix of the shapes real heaps have. Returns what to keep.
def allocate(count, tag)
  kept = []
  (count / 5).times do |i|
    kept << Order.new(i, "note #{tag} #{i}")    # OBJECT + STRING + ARRAY
    kept << Line.new("sku-#{i}", i)             # STRUCT + STRING
    kept << { id: i, tag: tag }                 # HASH
  end
  kept
end

def dump(path)
  GC.start
  File.open(path, "w") { |f| ObjectSpace.dump_all(output: f) }
end

mode, out, objects = ARGV
objects = Integer(objects || 1_000_000)
ObjectSpace.trace_object_allocations_start
case mode
when "big"
  $keep = allocate(objects, "big")
  dump(out)
when "triple"
  $base = allocate(objects, "a")
  dump("#{out}-a.json")
  batch = allocate(objects, "b")
  $first = batch.each_slice(2).map(&:first)
  batch = nil
  dump("#{out}-b.json")
  $second = allocate(objects, "c")
  $first = $first.each_slice(2).map(&:first)
  dump("#{out}-c.json")
else
  abort "usage: heap_gen.rb big OUT OBJECTS | triple PREFIX OBJECTS"
end
