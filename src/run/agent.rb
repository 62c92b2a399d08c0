# frozen_string_literal: true
#
# leakhunt agent: loaded into the program by `leakhunt run` through RUBYOPT=-r<this file>.
#
# Stage: `run`, inside the target. It connects to leakhunt's private Unix socket and, on request,
# takes a heap snapshot (full GC, ObjectSpace.dump_all) and writes a sidecar with what only the
# running process knows: the FFI inventory, the classes that wrap FFI functions, and how many
# instances of those classes were created and released. With the lsan backend it also runs
# LeakSanitizer's check right after the GC, so FFI objects the program dropped have been freed.
#
# Every Ruby process of the program's tree runs an agent: the program itself, the Ruby programs
# it starts (they inherit RUBYOPT), and the processes it forks — the agent re-arms in the child
# from Process._fork (Ruby 3.1+; fork, Process.fork and IO.popen("-") all go through it): its own
# connection, pid and parent, lifecycle counts from zero.
#
# Protocol, one line each way (LEAKHUNT_SOCKET, 0600, in leakhunt's 0700 directory):
#   agent -> leakhunt  "hello PROTOCOL PID PPID started|forked[ GC_COUNT]<TAB>RUBY_DESCRIPTION<TAB>COMMAND_JSON"
#                      GC_COUNT: a forked process's GC.count as it was forked (its parent's)
#   leakhunt -> agent  "snapshot N REASON SECONDS HEAP_FILE SIDECAR_FILE"
#                      SECONDS: the round's deadline; the files: plain names in the bundle
#   agent -> leakhunt  "overran N STEP SECONDS"                a step ran past the SECONDS it had
#   agent -> leakhunt  "ok N HEAP_FILE SIDECAR_FILE" | "error N MESSAGE"
#   agent -> leakhunt  "exiting DETAIL"                        from the at_exit hook
#   leakhunt -> agent  "bye"                                   the at_exit hook may return
# The at_exit hook waits for a final snapshot or "bye" (bounded by LEAKHUNT_EXIT_WAIT) in a
# started process, and in a forked one only once it has taken a snapshot: a short-lived fork
# never waits for leakhunt.
# Knobs: the LEAKHUNT_* variables of src/run/knobs.rs. Every file written here is 0600; the
# sidecar's first key is "leakhunt_agent" (its schema). The agent never raises into the program
# and never writes to the program's stdout. Ruby 3.1 through 3.4.

module LeakhuntAgent
  PROTOCOL = 2
  SIDECAR_SCHEMA = 1
  # C symbol words that name a release or an allocation (checked in this order).
  RELEASE_WORDS = %w[close free destroy release term dispose delete unref dealloc finalize].freeze
  ALLOCATE_WORDS = %w[init new create alloc open dup copy].freeze

  # A tiny JSON writer: requiring 'json' here could activate a json gem the program's bundle
  # does not want.
  module Json
    ESCAPES = { '"' => '\\"', '\\' => '\\\\', "\n" => '\\n', "\r" => '\\r', "\t" => '\\t' }.freeze

    def self.dump(value, out = +'')
      case value
      when Hash
        out << '{'
        value.each_with_index do |(k, v), i|
          out << ',' if i.positive?
          string(k.to_s, out)
          out << ':'
          dump(v, out)
        end
        out << '}'
      when Array
        out << '['
        value.each_with_index do |v, i|
          out << ',' if i.positive?
          dump(v, out)
        end
        out << ']'
      when Integer then out << value.to_s
      when Float then out << (value.finite? ? value.to_s : 'null')
      when true then out << 'true'
      when false then out << 'false'
      when nil then out << 'null'
      else string(value.to_s, out)
      end
      out
    end

    def self.string(s, out)
      s = s.encode(Encoding::UTF_8, invalid: :replace, undef: :replace) unless s.encoding.ascii_compatible?
      s = s.dup.force_encoding(Encoding::UTF_8)
      s = s.scrub("\uFFFD") unless s.valid_encoding?
      out << '"'
      out << s.gsub(/["\\\x00-\x1f]/) { |c| ESCAPES[c] || format('\\u%04x', c.ord) }
      out << '"'
    end
  end

  # Where instances are created: the first caller outside gems, Ruby's own library and this
  # agent; the immediate caller when the whole stack is library code.
  class Sites
    LIBRARY_CACHE = 5_000

    # `frames`: a FrameSites to read sites with (under LSan), or nil.
    def initialize(frames = nil)
      @frames = frames
      prefixes = []
      if defined?(RbConfig)
        %w[rubylibprefix rubylibdir rubyarchdir sitedir sitelibdir vendordir vendorlibdir].each do |k|
          v = RbConfig::CONFIG[k]
          prefixes << v if v && !v.empty?
        end
      end
      if defined?(Gem)
        prefixes.concat(Gem.path) rescue nil
        prefixes << Gem.default_dir rescue nil
      end
      @prefixes = prefixes.compact.map { |p| p.end_with?('/') ? p : "#{p}/" }.uniq.freeze
      @library = { __FILE__ => true }
    end

    # Asked at every counted creation: a program's own file is remembered too (matching it
    # against some fifteen prefixes was 1.3 us a creation natively, 85 us under valgrind).
    def library?(path)
      cached = @library[path]
      return cached unless cached.nil?

      library = path.start_with?('<internal:') || @prefixes.any? { |p| path.start_with?(p) }
      # Boundedly: a program may eval code under a new file name per request (a table of those
      # would be the agent's own growth in the program's heap).
      @library[path] = library if @library.size < LIBRARY_CACHE
      library
    end

    # The creation site seen from a counting hook (frame 0 is this method, 1 the hook, 2 the
    # `new` that called it): [immediate site, first site outside libraries (or the immediate)].
    def creation_site
      if @frames
        # Frame 0 is Fiddle's call, 1 and 2 FrameSites', 3 this method, 4 the hook, 5 the `new`.
        site = @frames.site(5, self)
        return site if site
      end
      first = caller_locations(2, 1)&.first
      return nil unless first
      return [first, first] unless library?(first.path.to_s)

      [first, (caller_locations(3, 64) || []).find { |loc| !library?(loc.path.to_s) } || first]
    end
  end

  # Creation sites without caller_locations, under LSan: caller_locations mallocs its backtrace
  # and each Location, and LSan pays a full unwind for every malloc (17 us a site against 0.4
  # natively; the seed's 20,000 round trips create 80,000 counted messages). Ruby's
  # rb_profile_frames (through Fiddle, keeping the GVL) fills a thread's buffers with its frames
  # (method entries or instruction sequences, as integers) and their current lines, without
  # allocating. A frame is never handed back to Ruby: its path is looked up by its value and
  # line in a table that caller_locations filled (a miss takes the slow way and fills it),
  # which every GC empties (the only time a frame's value can go to another method).
  # - Frames and locations are matched one to one from the top: a Ruby frame's location has its
  #   line; a C function's frame has line 0 and its location its caller's line and path. A C
  #   block's frame (each_with_index's, a method's proc's) has no location, and nothing tells it
  #   from a C function's, so only the hook's own C caller (`new`) is matched among C frames:
  #   the frames below any other are not tabled (read the slow way), so a site under library
  #   code called through `each` is. A stack whose lines do not match is not tabled, and once
  #   MISMATCHES of them are more than an eighth of the fast reads the table is off for good
  #   (the slow way would cost more).
  # - A block or method entry stands for every block of its method, code an eval in it made
  #   too (another path: a template compiled into a proc, a binding's eval). A frame whose
  #   location is eval'd code (no absolute path) marks its value unsafe, for the whole run:
  #   such frames and a line-0 frame seen as a Ruby frame always go the slow way. The value of
  #   the frame below is part of the key, so that an eval's frame (the eval's C function below
  #   it) at a line where its method made an object is not read as the method's.
  # - A read in a thread whose buffers are in use (a trap handler that ran at an interrupt
  #   check in the middle of one) goes the slow way.
  class FrameSites
    LIMIT = 72
    MISMATCHES = 32
    TABLE_MAX = 4_096
    LINE_SHIFT = 48 # frame values are user-space addresses, below 2**47
    Site = Struct.new(:path, :lineno)

    # A FrameSites, or nil when Fiddle, the function or a call that keeps the GVL is missing.
    def self.make
      FiddleExtension.load
      word = FiddleExtension.type(:INTPTR_T)
      int = FiddleExtension.type(:INT)
      profile, held = FiddleExtension.function(::Fiddle::Handle::DEFAULT['rb_profile_frames'], [int, int, word, word], int)
      return nil unless held

      frames = new(profile)
      frames.learn_new
    rescue StandardError, ScriptError
      nil
    end

    def initialize(profile)
      @profile = profile
      @new = nil # Class#new's frame value
      @paths = {}  # (line << LINE_SHIFT) | frame value => path, for the GC count @epoch
      @ruby = {}   # frame values seen as Ruby frames, for @epoch
      @unsafe = {} # frame values seen running eval'd code (the whole run)
      @epoch = nil
      @mismatches = 0
      @fast = 0
      @slow = 0
    end

    # Learns Class#new's frame value from a probe object's `initialize` (frame 0 is Fiddle's
    # call, 1 this block, 2 the `new`): the only C frame `fill` matches. Self, or nil.
    def learn_new
      profile = @profile
      frames = ::Fiddle::Pointer.malloc(8 * 3, ::Fiddle::RUBY_FREE)
      lines = ::Fiddle::Pointer.malloc(4 * 3, ::Fiddle::RUBY_FREE)
      count = nil
      probe = Class.new
      probe.define_method(:initialize) { count = profile.call(0, 3, frames.to_i, lines.to_i) }
      probe.new
      @new = value_at(frames, 2) if count == 3 && line_at(lines, 2).zero?
      @new ? self : nil
    end

    # How many sites were read from the table, and how many took caller_locations.
    def stats
      { fast: @fast, slow: @slow, off: off? }
    end

    # [immediate site, first site outside libraries] as Sites#creation_site gives them, with
    # frame `skip` (of this method's rb_profile_frames) the immediate caller; nil (the slow
    # way) when off or re-entered.
    def site(skip, sites)
      buffer = buffers
      if off? || buffer[2]
        @slow += 1
        return nil
      end

      buffer[2] = true
      begin
        read(buffer[0], buffer[1], skip, sites)
      ensure
        buffer[2] = false
      end
    end

    private

    # This thread's two buffers and whether a read is using them (fibers of a thread take
    # turns: they never read at once).
    def buffers
      Thread.current.thread_variable_get(:leakhunt_frames) ||
        Thread.current.thread_variable_set(:leakhunt_frames,
                                           [::Fiddle::Pointer.malloc(8 * LIMIT, ::Fiddle::RUBY_FREE),
                                            ::Fiddle::Pointer.malloc(4 * LIMIT, ::Fiddle::RUBY_FREE), false])
    end

    def read(frames, lines, skip, sites)
      epoch = GC.count
      unless epoch == @epoch
        forget
        @epoch = epoch
      end
      count = @profile.call(0, LIMIT, frames.to_i, lines.to_i)
      # Only if no GC came between the frames and the table (nor, so, another thread's fill).
      found = GC.count == epoch && from_table(frames, lines, count, skip, sites)
      if found && GC.count == epoch
        @fast += 1
        return found
      end
      @slow += 1
      locations = caller_locations(0, LIMIT)
      fill(frames, lines, count, locations, skip) if GC.count == epoch
      # Location i is frame i + 1 (frame 0, Fiddle's call, is no longer on the stack).
      first = locations[skip - 1]
      return nil unless first
      return [first, first] unless sites.library?(first.path.to_s)

      [first, locations[skip, 64].find { |loc| !sites.library?(loc.path.to_s) } || first]
    end

    def forget
      @paths.clear
      @ruby.clear
    end

    # Frame i's value and line in a thread's buffers.
    def value_at(frames, i)
      frames[8 * i, 8].unpack1('J')
    end

    def line_at(lines, i)
      lines[4 * i, 4].unpack1('l')
    end

    # The immediate site is the first Ruby frame from `skip` on; the user's, the first Ruby frame
    # outside libraries among the next 64 frames (a C function's frame among them stands for
    # the Ruby frame after it, even past them). Nil when a frame is not in the table.
    def from_table(frames, lines, count, skip, sites)
      first = nil
      last = skip + 64
      carried = false
      i = skip
      while i < count
        value = value_at(frames, i)
        return nil if @unsafe.key?(value)

        line = line_at(lines, i)
        if line.zero?
          # A Ruby frame at line 0 (eval'd code) is not a C function's.
          return nil if @ruby.key?(value)

          carried = i <= last
        else
          return first && [first, first] if i > last && !carried

          path = lookup((line << LINE_SHIFT) | value, i + 1 < count ? value_at(frames, i + 1) : nil)
          return nil unless path

          site = Site.new(path, line)
          first ||= site
          return [first, site] unless sites.library?(path)

          carried = false
        end
        i += 1
      end
      # The frames ran out: the buffer's end, or the stack's.
      count < LIMIT && first ? [first, first] : nil
    end

    # Tables the Ruby frames from the top down to the first C frame but `Class#new` calling the
    # hook (frame `skip`, told by its value): a C function's frame has one location, at its
    # caller's line and path (so the next location repeats it), but a C block's frame
    # (each_with_index's, or a method's proc's: `initialize` may be yielded to) has none and
    # nothing else tells the two apart; a C block next to `new` would make two C frames in a
    # row. Neither is tabled past.
    def fill(frames, lines, count, locations, skip)
      pairs = []
      at = 1 # frame 1 is this object's `read`, whose line differs between the two reads
      i = 2
      while i < count && (location = locations[at])
        value = value_at(frames, i)
        line = line_at(lines, i)
        below = i + 1 < count ? value_at(frames, i + 1) : nil
        if line.zero?
          after = locations[at + 1]
          caller_line = i + 1 < count ? line_at(lines, i + 1) : 0
          break unless i == skip && value == @new && !caller_line.zero? && after &&
                       after.lineno == location.lineno && after.path == location.path

          if location.lineno.zero?
            # A Ruby frame at line 0 (eval'd code), not a C function's.
            unsafe(value)
            break
          end
          return mismatch unless location.lineno == caller_line
        else
          return mismatch unless location.lineno == line

          # Eval'd code: its method's entry stands for it too.
          location.absolute_path.nil? ? unsafe(value) : pairs << [value, line, below, -location.path.to_s]
        end
        at += 1
        i += 1
      end
      forget if @paths.size + pairs.size > TABLE_MAX
      pairs.each do |value, line, below, path|
        next if @unsafe.key?(value)

        @ruby[value] = true
        key = (line << LINE_SHIFT) | value
        entry = @paths[key]
        if entry.nil?
          @paths[key] = [below, path]
        elsif entry.is_a?(Hash)
          entry[below] = path
        elsif entry[0] != below
          @paths[key] = { entry[0] => entry[1], below => path }
        end
      end
    end

    # A frame's path by its value and line, and the value of the frame below it: code an eval
    # runs with a method's binding has the method's entry, at lines of its own, with the eval's
    # C function below it.
    def lookup(key, below)
      entry = @paths[key]
      return nil unless entry
      return entry[below] if entry.is_a?(Hash)

      entry[0] == below ? entry[1] : nil
    end

    def unsafe(value)
      if @unsafe.size >= TABLE_MAX
        @unsafe.clear
        forget
      end
      @unsafe[value] = true
      @paths.delete_if { |key, _| key & ((1 << LINE_SHIFT) - 1) == value } if @ruby.delete(value)
    end

    def mismatch
      @mismatches += 1
      nil
    end

    def off?
      @mismatches >= MISMATCHES && @mismatches * 8 > @fast
    end
  end

  # Instances created and release calls made for one wrapper class, by creation site. Releases
  # are put to the site of the released instance: with every allocation traced, through the
  # allocation record Ruby keeps (the immediate site, mapped to the user's site seen at
  # creation); with sampled tracing (`by_id`), Ruby has no record for most instances, so the
  # counter keeps each live instance's site by object id. Ids of instances the GC took without a
  # release are dropped now and then (`prune`); ids are never reused, so a stale one is only memory.
  #
  # A program may create instances at ever new sites (code eval'd under a new file name per
  # request, as template engines compile views): the counter keeps at most MAX_SITES of them, so
  # that its own tables stay bounded. Past that, a creation at a new site counts in `created`
  # only. Each round, while the program is parked, makes room again (`prune`): it forgets the
  # sites whose instances were all released (nothing there to find), then, if the table is still
  # more than half full, the sites with the fewest instances not released. A site that starts
  # leaking after the table filled up is counted once a round has made room, unless new sites
  # fill it again before that site's next creation (a program making thousands of new sites
  # between two rounds): its instances then count in `created` only.
  class Counter
    attr_reader :klass, :release_methods, :since
    attr_reader :created, :released

    PRUNE_FLOOR = 10_000
    MAX_SITES = 2_000

    def initialize(klass, release_methods, since, per_site_releases, by_id)
      @klass = klass
      @release_methods = release_methods
      @since = since
      @created = 0
      @released = 0
      @per_site_releases = per_site_releases
      @by_id = by_id
      @sites = Hash.new { |h, path| h[path] = Hash.new(0) }
      @released_at = Hash.new { |h, path| h[path] = Hash.new(0) }
      @user_site_for = {} # "immediate path:line" => [user path, user line], when they differ
      @site_keys = Hash.new { |h, path| h[path] = {} } # path => { line => [path, line] }
      @born_at = {}                                    # object id => [path, line]
      @site_count = 0                                  # (path, line) pairs in @sites
      @prune_at = PRUNE_FLOOR
    end

    # Counts start again in a forked child: what its parent created is its parent's.
    def restart(since)
      @since = since
      @created = 0
      @released = 0
      @sites.clear
      @released_at.clear
      @user_site_for.clear
      @site_keys.clear
      @born_at.clear
      @site_count = 0
      @prune_at = PRUNE_FLOOR
    end

    def count_creation(instance, site)
      @created += 1
      return unless site

      first, user = site
      path = user.path.to_s
      line = user.lineno
      lines = @sites.fetch(path, nil)
      unless lines&.key?(line)
        return if @site_count >= MAX_SITES

        @site_count += 1
        lines ||= @sites[path]
      end
      lines[line] += 1
      return unless @per_site_releases

      if @by_id
        @born_at[instance.__id__] = (@site_keys[path][line] ||= [path, line].freeze)
      elsif !first.equal?(user)
        @user_site_for["#{first.path}:#{first.lineno}"] ||= [path, line]
      end
    end

    def count_release(instance)
      @released += 1
      return unless @per_site_releases

      if @by_id
        path, line = @born_at.delete(instance.__id__)
      else
        path = ObjectSpace.allocation_sourcefile(instance)
        return unless path

        line = ObjectSpace.allocation_sourceline(instance)
        path, line = @user_site_for["#{path}:#{line}"] || [path, line] unless @user_site_for.empty?
      end
      # Only at a site the counter keeps (not one it forgot, nor one it had no room for).
      @released_at[path][line] += 1 if path && @sites.fetch(path, nil)&.key?(line)
    end

    # Called while the program is parked (no hook adds a site meanwhile): makes room for new
    # sites, and forgets the ids of instances that are gone (collected without a release) once
    # that table has doubled since the last time, by a walk over the class's instances.
    def prune
      forget_sites if @site_count > MAX_SITES / 2
      return if @born_at.size < @prune_at

      live = {}
      ObjectSpace.each_object(@klass) do |o|
        id = o.__id__
        live[id] = true if @born_at.key?(id)
      end
      @born_at.select! { |id, _| live.key?(id) }
      @prune_at = [@born_at.size * 2, PRUNE_FLOOR].max
    end

    # Drops the sites whose instances were all released, then the ones with the fewest instances
    # not released, down to half the table.
    def forget_sites
      outstanding = []
      @sites.each do |path, lines|
        released = @released_at.fetch(path, nil)
        lines.each do |line, n|
          outstanding << [n - (released&.fetch(line, 0) || 0), path, line]
        end
      end
      outstanding.sort_by!(&:first)
      keep = MAX_SITES / 2
      drop = outstanding.take_while.with_index do |(left, _, _), i|
        (@per_site_releases && left <= 0) || outstanding.size - i > keep
      end
      return if drop.empty?

      gone = {}.compare_by_identity # the dropped sites' keys, which @born_at's values are
      drop.each do |_, path, line|
        delete_site(@sites, path, line)
        delete_site(@released_at, path, line)
        key = delete_site(@site_keys, path, line)
        gone[key] = true if key
      end
      # Counted again rather than decreased: a hook interrupted between finding a site's table
      # and counting into it may have counted into one dropped here.
      @site_count = @sites.sum { |_, lines| lines.size }
      @born_at.delete_if { |_, key| gone.key?(key) } unless gone.empty?
      @user_site_for.clear if @user_site_for.size > MAX_SITES * 2
    end

    # Deletes `line` from `table[path]` (and the path once it has no line left); its value.
    def delete_site(table, path, line)
      lines = table.fetch(path, nil) or return nil
      value = lines.delete(line)
      table.delete(path) if lines.empty?
      value
    end

    def to_h
      sites = []
      @sites.each do |path, lines|
        lines.each do |line, n|
          site = { file: path, line: line, count: n }
          site[:released] = @released_at.fetch(path, nil)&.fetch(line, 0) || 0 if @per_site_releases
          sites << site
        end
      end
      sites.sort_by! { |s| -s[:count] }
      {
        class: LeakhuntAgent.name_of(@klass),
        created: @created,
        released: @released,
        release_methods: @release_methods.map(&:to_s),
        created_at: sites.first(20),
        since: @since
      }
    end
  end

  # What one method's instruction sequence calls and names.
  class MethodFacts
    attr_reader :mids, :consts

    def self.of(method)
      iseq = RubyVM::InstructionSequence.of(method)
      return nil unless iseq

      facts = new
      facts.walk(iseq.to_a)
      facts.freeze
    rescue StandardError
      nil
    end

    def initialize
      @mids = []
      @consts = []
    end

    def freeze
      @mids = @mids.uniq.freeze
      @consts = @consts.uniq.freeze
      super
    end

    # Instructions are arrays: [:opt_send_without_block, {mid: :zmq_msg_close, ...}],
    # [:getconstant, :LibZMQ] (3.1), [:opt_getconstant_path, [:ZMQ, :LibZMQ]] (3.2+). Blocks
    # appear as nested instruction sequences inside the send that takes them.
    def walk(node)
      node.each do |x|
        next unless x.is_a?(Array)

        op = x[0]
        if op.is_a?(Symbol)
          case op
          when :getconstant then @consts << x[1] if x[1].is_a?(Symbol)
          when :opt_getconstant_path then @consts << x[1].last if x[1].is_a?(Array) && x[1].last.is_a?(Symbol)
          end
          x.each { |o| @mids << o[:mid] if o.is_a?(Hash) && o[:mid].is_a?(Symbol) }
        end
        walk(x)
      end
    end

    def finalizer_detail
      return 'ObjectSpace.define_finalizer' if @mids.include?(:define_finalizer) && @consts.include?(:ObjectSpace)
      return 'FFI::AutoPointer' if @consts.include?(:AutoPointer)
      return 'FFI::ManagedStruct' if @consts.include?(:ManagedStruct)

      nil
    end
  end

  # Modules extended with FFI::Library, their libraries and functions, and the classes that
  # call those functions.
  class Inventory
    def initialize(agent)
      @agent = agent
      @libraries = {}.compare_by_identity # module => [[given name, loaded name]]
      @functions = {}.compare_by_identity # module => { ruby name => [symbol, params, returns] }
      @wrappers = {}.compare_by_identity  # class => wrapper hash (rebuilt by each scan)
      @counters = {}.compare_by_identity  # class => Counter (kept for the whole run)
      @own = {}.compare_by_identity       # the agent's own hook modules, never scanned
      @hooks = {}.compare_by_identity     # class => its counting module
      # By the module's object id (never reused), which holds no module alive: a program's
      # anonymous classes die as they would without the agent.
      @instance_facts = {}                # module id => { method name => [location, MethodFacts] }
      @singleton_facts = {}
      @index = nil                        # function_index, rebuilt when functions change
      @definitions = 0                    # methods defined outside the agent's own modules
      @scanned_at = nil                   # @definitions when the last whole scan began
      @unnamed = []                       # FFI modules without a name when the index was made
      @hooked = false
      @lock = Mutex.new
      @before = modules_before
    end

    # The modules there before the agent, each until a method is defined in it (or a class body
    # of it ends): a scan skips them. Only when every file loaded before the agent is Ruby's
    # own (its library, RubyGems, Bundler's setup) and FFI is not loaded: then none of them
    # calls an attached function, and reading them was four fifths of a first scan (2 s of 2.5
    # under valgrind, 0.1 s natively for the seed's 470 modules). A library the program
    # preloads (`ruby -rlib`, RUBYOPT) may call FFI it loads later (an autoload): then every
    # module is read (nil).
    def modules_before
      return nil if ffi_loaded? || !Inventory.rubys_own_loaded?

      before = {}.compare_by_identity
      ObjectSpace.each_object(Module) { |mod| before[mod] = true }
      before
    end

    # RubyGems and Bundler (`bundle exec`'s -rbundler/setup) wherever they are installed.
    RUBYS_OWN_FEATURE = %r{/(?:rubygems|bundler)(?:/|\.rb\z)}

    # Whether every loaded feature is built in, from Ruby's library directories, RubyGems or
    # Bundler (or this agent).
    def self.rubys_own_loaded?
      dirs = %w[rubylibdir rubyarchdir].map { |k| RbConfig::CONFIG[k].to_s }.reject(&:empty?).map { |d| "#{d}/" }
      agent = File.expand_path(__FILE__)
      $LOADED_FEATURES.all? do |feature|
        !feature.include?('/') || feature == agent || dirs.any? { |d| feature.start_with?(d) } ||
          RUBYS_OWN_FEATURE.match?(feature)
      end
    rescue StandardError
      false
    end

    def ffi_loaded?
      defined?(::FFI::Library) ? true : false
    end

    # Marks one of the agent's hook modules: never scanned, seen through when listing methods.
    def own(mod)
      @own[mod] = true
    end

    def own?(mod)
      @own.key?(mod)
    end

    # Prepends recording hooks to FFI::Library as soon as it exists, before libraries attach.
    def hook_ffi
      return if @hooked || !ffi_loaded?

      @hooked = true
      inventory = self
      hook = Module.new do
        define_method(:ffi_lib) do |*names|
          result = super(*names)
          inventory.note_libraries(self, names)
          result
        end
        define_method(:attach_function) do |*args, &block|
          result = super(*args, &block)
          inventory.note_function(self, args)
          result
        end
        ruby2_keywords(:attach_function)
      end
      @own[hook] = true
      ::FFI::Library.prepend(hook)
    end

    def note_libraries(mod, names)
      loaded = (mod.ffi_libraries rescue []).map { |l| l.respond_to?(:name) ? l.name.to_s : l.to_s }
      given = names.flatten.map(&:to_s)
      @libraries[mod] = given.each_with_index.map { |g, i| [g, loaded[i] || g] }
      @index = nil
    rescue StandardError => e
      @agent.note_error("ffi_lib in #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
    end

    # Same reading of the arguments as FFI::Library#attach_function.
    def note_function(mod, args)
      name, a2, a3, a4 = args
      symbol, params, returns = a4 && (a2.is_a?(String) || a2.is_a?(Symbol)) ? [a2, a3, a4] : [name, a2, a3]
      params = Array(params).map { |t| type_name(t) }
      (@functions[mod] ||= {})[name.to_sym] = [symbol.to_s, params, type_name(returns)]
      @index = nil
    rescue StandardError => e
      @agent.note_error("attach_function in #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
    end

    def type_name(t)
      case t
      when Symbol, String then t.to_s
      when Module then LeakhuntAgent.name_of(t)
      when nil then 'void'
      else t.respond_to?(:inspect) ? t.inspect[0, 60] : t.to_s
      end
    end

    def ffi_modules
      mods = []
      ObjectSpace.each_object(Module) { |m| mods << m if m.is_a?(::FFI::Library) }
      mods
    end

    # Holds the inventory for a snapshot round: no program thread is inside a scan meanwhile.
    def synchronize(&block)
      @lock.owned? ? yield : @lock.synchronize(&block)
    end

    # Runs a scan from a program thread only if no round holds the inventory: a program thread
    # never waits for the agent (it may hold a lock a finalizer run by the round needs). What is
    # skipped, the next round's scan covers.
    def unless_busy
      return if @lock.owned? || !@lock.try_lock

      begin
        yield
      ensure
        @lock.unlock
      end
    end

    # Scans the classes (`scan_all`) after a top-level require, unless a round is under way or
    # the file defined no method.
    def scan_all_unless_busy
      unless_busy { scan_all if scan_needed? }
    end

    # A method was defined, or a class made, in `mod` (`Extensions`' hooks on Module and Class).
    def defined(mod)
      return if @own.key?(mod)

      # First: a scan that begins in between reads `mod`, and one that began before is stale.
      @before&.delete(mod)
      @definitions += 1
    end

    # Whether a scan can find anything new: a method was defined, a function attached or an
    # FFI module named since the last whole scan began (or the last one was cut short). A scan
    # reads every method of every class but those before the agent (20-40 ms of each of the
    # seed's rounds natively before they were skipped, 0.15 s under LSan, where each Method
    # object's malloc pays a full unwind, 0.6 s under valgrind), and a program past its boot
    # seldom defines any. A method a class defines while it overrides `method_added` without
    # calling super, outside a class body, is read at the next definition seen (and one in a
    # module there before the agent, never, unless something else is defined in it or a
    # class body of it ends).
    def scan_needed?
      @scanned_at.nil? || @scanned_at != @definitions || @index.nil? ||
        @unnamed.any? { |mod| !Constants::NAME.bind_call(mod).nil? }
    end

    # A round that skips the scan: a wrapper named since it was found (`X = Class.new do … end`)
    # goes by its name, which its counts carry.
    def refresh_names
      @wrappers.each { |mod, wrapper| wrapper[:class] = LeakhuntAgent.name_of(mod) }
    end

    # Scans every class but those there before the agent and untouched since (the round's,
    # inside `synchronize`, stopping at its deadline; or after a top-level require).
    def scan_all(deadline = nil)
      return unless ffi_loaded?

      synchronize do
        definitions = @definitions
        # A scan that does not go through every class (its deadline, an exception) leaves the
        # next one needed.
        @scanned_at = nil
        @index = nil
        index = function_index
        return if index.empty?

        @wrappers = {}.compare_by_identity
        seen = {}
        whole = true
        ObjectSpace.each_object(Module) do |mod|
          next if @before&.key?(mod)

          seen[scan(mod, index)] = true
          next unless deadline && @agent.clock > deadline

          whole = false
          break
        end
        return unless whole

        forget_all_but(seen)
        @scanned_at = definitions
      end
    end

    # The facts of classes that are gone.
    def forget_all_but(seen)
      [@instance_facts, @singleton_facts].each { |cache| cache.select! { |id, _| seen.key?(id) } }
    end

    # The lifecycle counts as they are now, copied while the program's threads are parked: the
    # sidecar is written after they resume, when their hooks may add creation sites.
    def copy_counts
      @counters.each_value(&:prune)
      @counts = @counters.values.map(&:to_h)
    end

    # Scans one class whose body just ended (TracePoint :end).
    def scan_one(mod)
      # Read by whole scans from now on too (a class body that ended defined something, or
      # may have: `method_added` overridden without super does not tell).
      @before&.delete(mod)
      return unless ffi_loaded? && @hooked

      unless_busy do
        index = function_index
        scan(mod, index) unless index.empty?
      end
    end

    # ruby name => [[module, last constant name, symbol]]. Ruby helpers of an FFI module
    # (LibZMQ.terminate_context calling zmq_ctx_term) stand for the functions they call.
    def function_index
      return @index if @index

      index = {}
      @unnamed = []
      ffi_modules.each do |mod|
        functions = @functions[mod] || fallback_functions(mod)
        # Calls are matched by the module's constant name: one named later (`LibX = lib`, which
        # no hook sees) needs the index made again.
        @unnamed << mod if Constants::NAME.bind_call(mod).nil?
        short = LeakhuntAgent.name_of(mod).split('::').last.to_sym
        functions.each { |name, (symbol, _, _)| (index[name] ||= []) << [mod, short, symbol] }
        mod.singleton_methods(false).each do |name|
          next if functions.key?(name)

          method = METHOD.bind_call(mod, name) rescue next
          facts = facts_for(OBJECT_ID.bind_call(mod), name, true, method)
          next unless facts

          facts.mids.uniq.each do |mid|
            symbol = functions[mid]&.first
            (index[name] ||= []) << [mod, short, symbol] if symbol
          end
        end
      end
      @index = index
    end

    # Modules that attached functions before the hook existed (FFI loaded before the agent):
    # ffi >= 1.16 lists them; older ones leave us the names only.
    def fallback_functions(mod)
      return {} unless mod.respond_to?(:attached_functions)

      mod.attached_functions.to_h { |name, _| [name.to_sym, [name.to_s, [], '']] }
    rescue StandardError
      {}
    end

    # Scans one class; returns its object id (what its facts are kept by).
    def scan(mod, index)
      return if @own.key?(mod) || mod.singleton_class?

      id = OBJECT_ID.bind_call(mod)
      # The agent's own classes; an FFI module's functions are the index, not a wrapper.
      return id if LeakhuntAgent.name_of(mod).start_with?('LeakhuntAgent')
      return id if !mod.is_a?(Class) && mod.is_a?(::FFI::Library)

      wrapper = wrapper_of(mod, id, index)
      @wrappers[mod] = wrapper if wrapper
      id
    rescue StandardError => e
      @agent.note_error("scanning #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
      id
    end

    OBJECT_ID = Kernel.instance_method(:object_id)
    METHOD = Kernel.instance_method(:method)

    # The wrapper a class is, from its methods (hooked to count its instances), or nil.
    def wrapper_of(mod, id, index)
      methods = []
      finalizer = finalizer_by_ancestry(mod)
      each_method(mod) do |name, method, singleton|
        facts = facts_for(id, name, singleton, method)
        next unless facts

        finalizer ||= facts.finalizer_detail && "#{facts.finalizer_detail} in #{LeakhuntAgent.name_of(mod)}#{singleton ? '.' : '#'}#{name}"
        calls = ffi_calls(mod, facts, index)
        next if calls.empty?

        file, line = method.source_location
        methods << { name: name.to_s, singleton: singleton, file: file, line: line,
                     calls: calls.map { |m, sym| { module: m, function: sym } }, role: role(name, calls) }
      end
      return nil if methods.empty?

      first = methods.find { |m| m[:file] } || {}
      begin
        instrument(mod, methods) if mod.is_a?(Class) && methods.any? { |m| !m[:singleton] }
      rescue StandardError => e
        # Still a wrapper (a frozen class takes no hook): uncounted, but its release and
        # finalizer are known.
        @agent.note_error("counting #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
      end
      { class: LeakhuntAgent.name_of(mod), file: first[:file], line: first[:line],
        methods: methods, finalizer: !finalizer.nil?, finalizer_detail: finalizer }
    end

    # MethodFacts, computed once per method definition (a scan under valgrind would otherwise
    # take seconds: reading instruction sequences is most of its cost).
    def facts_for(id, name, singleton, method)
      per_module = (singleton ? @singleton_facts : @instance_facts)[id] ||= {}
      location = method.source_location
      cached = per_module[name]
      return cached[1] if cached && cached[0] == location

      facts = MethodFacts.of(method)
      per_module[name] = [location, facts]
      facts
    end

    def finalizer_by_ancestry(mod)
      return nil unless mod.is_a?(Class)

      %w[AutoPointer ManagedStruct].each do |name|
        base = ::FFI.const_get(name) rescue nil
        return "subclass of FFI::#{name}" if base && mod < base
      end
      nil
    end

    def each_method(mod)
      (mod.instance_methods(false) + mod.private_instance_methods(false)).each do |name|
        um = mod.instance_method(name) rescue next
        um = um.super_method while um && @own.key?(um.owner)
        next unless um&.owner.equal?(mod)

        yield name, um, false
      end
      mod.singleton_methods(false).each do |name|
        m = METHOD.bind_call(mod, name) rescue next
        yield name, m, true
      end
    end

    # [[module name, C symbol]] for calls to attached functions on their module's constant (or
    # on the class itself when the class is the FFI module).
    def ffi_calls(mod, facts, index)
      calls = []
      facts.mids.uniq.each do |mid|
        (index[mid] || []).each do |ffi_mod, short, symbol|
          next unless facts.consts.include?(short) || ffi_mod.equal?(mod)

          calls << [LeakhuntAgent.name_of(ffi_mod), symbol]
        end
      end
      calls.uniq
    end

    def role(name, calls)
      release = calls.any? { |_, sym| word_match?(sym, RELEASE_WORDS) }
      allocate = calls.any? { |_, sym| word_match?(sym, ALLOCATE_WORDS) }
      if release && allocate
        return 'release' if word_match?(name.to_s, RELEASE_WORDS)
        return 'allocate' if word_match?(name.to_s, ALLOCATE_WORDS) || name == :initialize

        return 'other'
      end
      return 'release' if release
      return 'allocate' if allocate

      'other'
    end

    # "zmq_msg_close" has the word "close"; "malloc" ends with "alloc"; "determine" has no "term".
    def word_match?(symbol, words)
      symbol.downcase.split(/[^a-z0-9]+/).any? do |w|
        words.any? { |k| w == k || w.start_with?(k) || w.end_with?(k) }
      end
    end

    # Prepends a counting module: initialize and each release method count, then call super.
    # Release methods found by a later scan are added to the same module.
    def instrument(klass, methods)
      # A frozen class takes no hook: none is made (and kept among the agent's own) at each scan.
      raise FrozenError, "can't modify frozen class: #{LeakhuntAgent.name_of(klass)}" if klass.frozen? && !@counters.key?(klass)

      counter = @counters[klass] ||= begin
        counter = Counter.new(klass, [], @agent.clock, @agent.alloc_sites?, @agent.sampled_sites?)
        sites = @agent.sites
        # The agent's own before its first method, which `defined` then does not count.
        hook = Module.new
        @own[hook] = true
        hook.module_eval do
          define_method(:initialize) do |*args, &block|
            result = super(*args, &block)
            begin
              counter.count_creation(self, sites.creation_site)
            rescue StandardError => e
              LeakhuntAgent.note_error("counting #{counter.klass} creation: #{e.class}: #{e.message}")
            end
            result
          end
          ruby2_keywords(:initialize)
          private :initialize
        end
        @hooks[klass] = hook
        klass.prepend(hook)
        counter
      end
      hook = @hooks[klass]
      methods.each do |m|
        name = m[:name].to_sym
        next if m[:singleton] || m[:role] != 'release' || counter.release_methods.include?(name)

        counter.release_methods << name
        LeakhuntAgent.wrap(hook, klass, name) { |instance| counter.count_release(instance) }
      end
    end

    # A forked child counts its own instances from now on (a copy its parent made for a round
    # under way is its parent's too).
    def restart_counts(since)
      @counters.each_value { |c| c.restart(since) }
      @counts = nil
    end

    def to_sidecar(maps)
      mods = ffi_loaded? ? ffi_modules : []
      ffi = mods.map do |mod|
        libs = @libraries[mod] || (mod.ffi_libraries rescue []).map { |l| [l.name.to_s, l.name.to_s] }
        functions = (@functions[mod] || fallback_functions(mod)).map do |name, (symbol, params, returns)|
          { name: name.to_s, symbol: symbol, params: params, returns: returns }
        end
        { name: LeakhuntAgent.name_of(mod),
          libraries: libs.map { |given, loaded| { name: given, path: LeakhuntAgent.resolve_library(loaded, maps) } },
          functions: functions }
      end
      counts = @counts || []
      @counts = nil
      { ffi: ffi, wrappers: @wrappers.values, lifecycle: counts }
    end
  end

  # How many allocation records objspace's tracer holds, so that the malloc measure of
  # `--backend none` can take them off (`MallocInfo`): records are malloc'd memory no Ruby
  # object accounts for (the tracer's dumped memsize counts its tables, not the records), and
  # with objspace's free hook off between phases the records left behind come and go with
  # every window. Read from the tracer's st_table (`num_entries`) through /proc/self/mem with
  # pread(2): a wrong address is an error (EIO), never a fault, and Fiddle's call keeps the GVL
  # so that a held round stays held. The table is found from objspace's two trace points, not
  # from fixed offsets: the trace point's data (inline in 3.3's embedded TypedData, behind a
  # pointer before) holds a pointer to objspace's `struct traceobj_arg`, where the two trace
  # points' VALUEs sit side by side and the object table follows them. Trusted only once 64
  # objects made then add 64 entries to within the agent's own few. Linux only; nil elsewhere,
  # and under `none` the free hook then stays on for the whole run.
  class RecordCount
    # One record: objspace.h's `struct allocation_info` (64 bytes) in glibc's 80-byte chunk.
    RECORD_BYTES = 80
    WORD = 8
    PROBE = 64
    SLACK = 16

    # `newobj`, `freeobj`: objspace's two trace points, enabled, tracing on.
    def self.locate(newobj, freeobj)
      return nil unless RUBY_PLATFORM.include?('linux') && File.readable?('/proc/self/mem')

      FiddleExtension.load
      counter = new
      return nil unless counter.find(::Fiddle.dlwrap(newobj), ::Fiddle.dlwrap(freeobj))

      counter.trusted? ? counter : nil
    rescue StandardError, ScriptError
      nil
    end

    def initialize
      int = FiddleExtension.type(:INT)
      @pread, held = FiddleExtension.function(::Fiddle::Handle::DEFAULT['pread'],
                                              [int, FiddleExtension.type(:VOIDP), FiddleExtension.type(:SIZE_T), FiddleExtension.type(:LONG_LONG)],
                                              FiddleExtension.type(:SSIZE_T))
      raise ArgumentError, 'a fiddle that releases the GVL' unless held

      @buffer = ::Fiddle::Pointer.malloc(3 * WORD)
      open_mem
    end

    # In a forked child: the inherited descriptor reads the parent's memory. Opened here, not
    # in a round (File.open lets the program's threads run).
    def after_fork
      @mem&.close
      open_mem
    rescue StandardError
      @mem = nil
    end

    # Records in the table now; nil when it cannot be read.
    def count
      words(@table, 3)&.last
    end

    def find(newobj, freeobj)
      [newobj, freeobj].each do |tp|
        bases = (2..5).map { |i| word(tp + (i * WORD)) } + [tp + 24, tp + 32, tp + 40]
        bases.compact.each do |base|
          (0..8).each do |j|
            arg = word(base + (j * WORD)) or next
            (0..4).each do |k|
              pair = words(arg + (k * WORD), 3) or next
              next unless pair[0] == newobj && pair[1] == freeobj

              @table = pair[2]
              return true if plausible?
            end
          end
        end
      end
      false
    end

    # 64 objects made now (the free hook on, as tracing starts) are 64 more entries, give or take
    # the agent's own (the buffer's String); a GC freeing traced objects meanwhile is tried again.
    def trusted?
      3.times do
        before = count or return false
        kept = Array.new(PROBE) { Object.new }
        after = count or return false
        added = after - before
        return true if added >= PROBE && added <= PROBE + SLACK

        kept.clear
      end
      false
    end

    private

    # st_table: entry_power, bin_power, size_ind, rebuilds_num; type; num_entries.
    def plausible?
      header = words(@table, 3) or return false
      power = header[0] & 0xff
      power <= 40 && header[2] <= (1 << power)
    end

    def word(address)
      words(address, 1)&.first
    end

    # `n` words from `address`, or nil: read through this process's own /proc/self/mem (an
    # address pread(2) cannot read is EIO; a descriptor the program closed, nil).
    def words(address, n)
      return nil unless address.is_a?(Integer) && address.between?(4096, (1 << 63) - (n * WORD)) && (address % WORD).zero?
      return nil unless @mem && @pid == Process.pid

      got = @pread.call(@mem.fileno, @buffer, n * WORD, address)
      got == n * WORD ? @buffer[0, n * WORD].unpack('Q*') : nil
    rescue IOError, SystemCallError
      nil
    end

    def open_mem
      @mem = File.open('/proc/self/mem', 'rb')
      @pid = Process.pid
    end
  end

  # Allocation sites (ObjectSpace.trace_object_allocations: the file:line a heap dump gives each
  # object). Tracing every allocation costs Ruby a malloc'ed record and a hash entry per object:
  # several times the CPU of an allocation-heavy program, more under LSan, where every malloc
  # pays a full unwind. `LEAKHUNT_ALLOC_SITES=sampled` (leakhunt's default) traces
  # - from the start (warm-up) until the program's code loading settles or the first snapshot
  #   round begins, whichever comes first. Settled: no `require` under way (its file's body and
  #   the agent's scan after it are loading too), no thread running a loaded file's top level
  #   (require_relative, load), and none that loaded a file nor a compiled script that is not an
  #   `eval` for SETTLE seconds, or SETTLE_SHARE of the time from the start to the last load if
  #   longer (a program slow to boot is as slow to make what follows). What a program makes while
  #   it loads and sets up (class bodies, containers made right after the requires, a framework's
  #   boot, which loads as it goes) lives long; what it makes once its code is loaded is its
  #   work, which the windows sample, and a container made then is named by the constant that
  #   holds it (`Constants`) or from the source; a setup loop in the main script that outlasts
  #   the settling time is traced only in part. A program whose work runs inside a require (a
  #   server started from a required file) keeps warm-up until the first round.
  #   Where the free hook is off in warm-up (but under `none`, below), a warm-up object
  #   that died leaves its record to the next object made in its slot, which only a previous dump
  #   of the process tells apart: so warm-up ends there with a dump of its own (`baseline`,
  #   warmup-PID.json in the agent's private directory, which leakhunt judges the process's first
  #   round by), and goes on until the first round when that dump cannot be held in memory
  #   (WARMUP_DUMP_MAX_MIB, or `Pause`'s limit if lower) or written;
  # - then in short windows (WINDOW seconds every PERIOD, the first FIRST_WINDOW after warm-up;
  #   the agent's thread needs the GVL to end one, so a window lasts up to a thread time slice
  #   longer), each opened when the program is at work (BUSY objects made in the last TICK) or
  #   PERIOD late at the latest: objects made at a steady rate, as the ones that pile up are, get
  #   sites in proportion, and a program idle when a window is due (a server before its first
  #   request, a script still sleeping) does not let it pass empty;
  # - during each snapshot round until the program resumes (under LSan until the command that
  #   took it returns, `round_resumed`), so that what the agent itself allocates then, in the
  #   dump, is known as its own (what it makes afterwards, writing the sidecar, is gone by the
  #   next round; the program's own work then runs untraced).
  # A record outlives its object unless objspace's free hook is on when the object dies, and a
  # dump gives it to whatever object takes the slot next while tracing is off, of any class (a
  # traced object gets a record of its own). The hook costs some 110-180 ns per freed object
  # (+1.0-1.6 CPU s over fixtures/run/allocs.rb, BENCHMARKS.md), and under LSan each record it
  # frees is a 64-byte block that native code may take over while objspace's table still holds
  # its address in a deleted entry: LSan, scanning that table, then finds a leaked structure
  # holding such a block reachable, with all it points to (ruby-sqlite3's leaked connections
  # were hidden from every round so). So the hook is on
  # - during a sampling window, and (but under LSan) for TAIL_GCS GCs after it, so that what the
  #   window made and still held at its end (a request under way) takes its records along when it
  #   dies; during a round until its closing minor GC (but under LSan), so that the round's own
  #   objects that die leave no records; never in warm-up, nor with `all` (every object made
  #   then gets a record of its own). Its cost follows the GCs, not the clock: a program that
  #   allocates fast pays for a few GCs' frees per window;
  # - always under `none` on Linux where the records cannot be counted (`RecordCount`): its malloc
  #   measure would count the records left behind.
  # leakhunt tells the records left behind apart as it compresses each dump
  # (src/run/stale_sites.rs): an object not in the process's previous dump with a record no
  # newer than that dump (every phase ends with a minor GC, a round's once its command returned,
  # and no window opens before it, so a later record is newer); a forked child's first dumps are
  # judged against its parent's last dump before the fork, told by the GC count its hello sends.
  # What it cannot tell: a slot that went to an object of the same class between two dumps keeps
  # the site the previous dump showed there, so a site's count never rises by it; and a window's
  # object that outlives the hook (under LSan the window's closing GC, elsewhere its tail) and
  # dies before the next round leaves its site to the slot's next object. Under LSan the records a
  # window frees at its end may still hide a share of a small-block native leak (the records
  # the next round makes take most of those blocks back first); `--alloc-sites all` frees none.
  # `1` (`--alloc-sites all`) traces every allocation for the whole run.
  class AllocationSites
    WINDOW = 0.02
    PERIOD = 4.0
    FIRST_WINDOW = 1.0
    TICK = 0.05
    # GCs after a window with the free hook still on (but under LSan). Most of what a program makes
    # dies within a GC or two (a request's objects); what outlives ten lives long (Ruby makes what
    # survives three old, and only a major GC frees those).
    TAIL_GCS = 10
    SETTLE = 0.25
    SETTLE_SHARE = 0.5
    # The largest warm-up dump (MiB): a round that begins meanwhile waits for it.
    WARMUP_DUMP_MAX_MIB = 64
    BUSY = 20
    TOP_REQUIRED = '<top (required)>'

    # `backend`: under `none` the hook stays on unless the records are counted (the agent measures
    # malloc after each round, and records left behind would be part of it); under `lsan` it is
    # on in windows only.
    # `dir`: the agent's private directory, where a warm-up dump goes.
    def initialize(sampled, backend, dir)
      @sampled = sampled
      @hold_records = backend == 'lsan'
      # Only Linux has the malloc measure (`MallocInfo`).
      @hook_always = backend == 'none' && RUBY_PLATFORM.include?('linux')
      @dir = dir
      @lock = Mutex.new
      @reasons = {} # :warmup, :window, :round, :all => true while it wants tracing on
      @tracing = false
      # Warm-up may end before the first round (with a dump of its own but under `none`).
      @settles = sampled && (@hook_always || !Pause.dump_arity.nil?)
      @loading = 0 # requires under way, in every thread
      @started_at = @loaded_at = LeakhuntAgent.clock # @loaded_at: the last time code was loaded
    end

    def sampled?
      @sampled
    end

    # [records objspace holds, bytes each] when they can be counted, else nil.
    def records
      count = @records&.count
      count && [count, RecordCount::RECORD_BYTES]
    end

    # Whether records are left behind under `none` because they are counted: a round whose
    # count fails then has no malloc measure (it would hold them).
    def counts_records?
      !@records.nil?
    end

    def start
      unless @sampled
        want(:all, true)
        return
      end
      want(:warmup, true)
      watch_scripts if @settles
      start_thread
    end

    # A require began (+1) or ended (-1; `loaded`: it loaded a file): warm-up does not settle
    # while one is under way.
    def require_step(delta, loaded = false)
      @loading = [@loading + delta, 0].max
      @loaded_at = LeakhuntAgent.clock if loaded
    end

    # In a forked child: the sampling thread did not survive the fork; the tracing state did
    # (a child forked during warm-up goes on tracing until its code settles or its first round;
    # a round under way in the parent is the parent's).
    def after_fork
      @records&.after_fork
      return unless @sampled

      @lock = Mutex.new
      @loading = Thread.current[:leakhunt_require_depth] || 0 # the other threads' are gone
      @round_ending = false
      want(:round, false)
      start_thread
    end

    # A snapshot round begins: tracing is on until the program resumes (`round_resumed`), and
    # warm-up is over (the round's full GC, traced, frees what warm-up made and dropped with its
    # records).
    def round_started
      return unless @sampled

      want(:round, true)
      want(:warmup, false)
    end

    # The round's paused steps are over and the program runs again: tracing ends, so that the
    # program's own work after it runs untraced (the windows sample it) while the round writes
    # its sidecar; the free hook stays on until `round_over`. Not under LSan: there the records
    # a window freed are blocks native code may have taken over, hiding a native leak from
    # LSan's scan of objspace's table, and the records the program makes until `round_over`
    # take most of them back first (ruby-sqlite3's unclosed statements, tests/run_e2e/cext.rs).
    def round_resumed
      return unless @sampled && !@hold_records

      @lock.synchronize do
        next unless @reasons.key?(:round)

        @round_ending = true
        update(:round, false)
      end
    end

    # Called once the command that took the round has returned: the round's own objects are
    # off the agent thread's stack, and the minor GC frees them (with their records, but under
    # LSan, where the round traces until now); every object traced afterwards is newer than the
    # round's dump.
    def round_over
      return unless @sampled

      round_resumed
      @lock.synchronize do
        next unless @round_ending || @reasons.key?(:round)

        GC.start(full_mark: false, immediate_sweep: true)
        @round_ending = false
        update(:round, false)
      end
    end

    private

    def start_thread
      @thread = Thread.new { sample }
      @thread.name = 'leakhunt-sites' if @thread.respond_to?(:name=)
      @thread.report_on_exception = false
      @thread.thread_variable_set(:fork_safe, true)
    end

    def sample
      window_at = nil
      allocated = GC.stat(:total_allocated_objects)
      loop do
        sleep TICK
        before = allocated
        allocated = GC.stat(:total_allocated_objects)
        end_tail if @hook_until_gc && GC.count >= @hook_until_gc
        if @reasons.key?(:warmup)
          settle if @settles && settled?
          next
        end

        # The first window soon after warm-up: what the program starts doing then is often
        # what it goes on doing.
        now = LeakhuntAgent.clock
        window_at ||= now + FIRST_WINDOW
        next if now < window_at || (allocated - before < BUSY && now < window_at + PERIOD)
        # Not until the round's GC (`round_over`): a record made before it would look as old as
        # the round's dump (src/run/stale_sites.rs).
        next if @round_ending

        want(:window, true)
        sleep WINDOW
        finish(:window)
        window_at = LeakhuntAgent.clock + PERIOD
        allocated = GC.stat(:total_allocated_objects)
      end
    rescue StandardError => e
      LeakhuntAgent.note_error("allocation sites: #{e.class}: #{e.message}")
    end

    def settled?
      return false if @loading.positive?
      return false if LeakhuntAgent.clock - @loaded_at < [SETTLE, (@loaded_at - @started_at) * SETTLE_SHARE].max
      return true unless loading_file?

      @loaded_at = LeakhuntAgent.clock
      false
    end

    # A thread runs the top level of a file being loaded: by require_relative or load, which the
    # require hook does not see end (a file's body can run long: a table built as it loads). The
    # main thread's outermost such file, when `load` started it, is the program itself (started
    # by a rubygems binstub, `bundle exec`), not a file it loads.
    def loading_file?
      Thread.list.any? do |thread|
        next false if thread.equal?(Thread.current)

        locations = thread.backtrace_locations || []
        tops = locations.each_index.select { |i| locations[i].label == TOP_REQUIRED }
        tops.pop if thread.equal?(Thread.main) && tops.any? && locations[tops.last + 1]&.base_label == 'load'
        !tops.empty?
      end
    end

    # Files loaded without Kernel#require (require_relative, load) are loads too; the trace point
    # is off once warm-up is over.
    def watch_scripts
      @scripts = TracePoint.new(:script_compiled) do |tp|
        @loaded_at = LeakhuntAgent.clock if tp.eval_script.nil?
      end
      @scripts.enable
    end

    # Ends warm-up before the first round. Where records outlive their objects, with a dump of
    # the heap as warm-up leaves it, after a full GC (a dead old object would be in it otherwise,
    # and could give its record to an object of its class made in its slot later): leakhunt judges
    # the first round's records by it as by a previous round's dump. The dump is held in a String
    # (as a held round's), with the GVL kept from the dump to the end of tracing unless a
    # finalizer lets go of it; the minor GC after it, under the lock, makes every later record
    # newer than it. Too big to hold, warm-up goes on. The full GC runs outside the lock, so that
    # a round beginning meanwhile does not wait for the finalizers it runs: that round ends
    # warm-up itself, and the dump is dropped.
    def settle
      priority = Thread.current.priority
      unless @hook_always
        GC.start(full_mark: true, immediate_sweep: true)
        # From the dump to tracing's end the GVL stays with this thread: a busy program waiting
        # for it would otherwise get it at the next interrupt check once its time slice (100 ms)
        # is over, and what it made then, traced after the dump, would have records newer than
        # the dump, which leakhunt takes for true ones once they outlive their objects
        # (warmup-gap.rb). Not during the GC: a thread its finalizers start would keep the
        # priority.
        Thread.current.priority = Pause::HIGHEST_PRIORITY
        dump = baseline
        unless dump
          @settles = false
          return
        end
      end
      @lock.synchronize do
        next unless @reasons.keys == [:warmup]

        update(:warmup, false)
        Thread.current.priority = priority
        # Before tracing can begin again (a round or a window takes the lock first): every
        # record made from now on is newer than the dump.
        GC.start(full_mark: false, immediate_sweep: true)
        # Written once tracing is off (the writes let the program run); a round waits for it.
        # Unwritten, the first round would have nothing to judge its records by: warm-up resumes
        # until then (what was made meanwhile has no site).
        if dump && !write_baseline(dump)
          @settles = false
          update(:warmup, true)
        end
      end
    ensure
      Thread.current.priority = priority
      dump&.clear
    end

    # Where a process's warm-up dump goes (leakhunt's src/run/stale_sites.rs reads it there).
    def self.warmup_dump(dir, pid)
      File.join(dir, "warmup-#{pid}.json")
    end

    # The warm-up dump, held in memory (the GVL kept); nil when it would be too big to hold.
    def baseline
      expected = GC.stat(:heap_live_slots) * Pause::BYTES_PER_OBJECT
      return nil if expected > [Pause.held_dump_max, WARMUP_DUMP_MAX_MIB << 20].min

      capacity = (expected * 3 / 2) + (1 << 20)
      dump = Pause.dump_into(String.new(capacity: capacity))
      if dump.bytesize > capacity
        LeakhuntAgent.note_error('the warm-up dump outgrew its buffer: objects made during it may keep sites ' \
                                 'of objects freed then')
      end
      dump
    rescue StandardError, NotImplementedError => e
      LeakhuntAgent.note_error("warm-up dump: #{e.class}: #{e.message}")
      nil
    end

    # Writes warmup-PID.json (0600); false when it cannot.
    def write_baseline(dump)
      LeakhuntAgent.write_private(AllocationSites.warmup_dump(@dir, Process.pid), dump)
      true
    rescue StandardError => e
      LeakhuntAgent.note_error("warm-up dump: #{e.class}: #{e.message}")
      false
    end

    # Ends a phase with a minor GC while tracing (and so the free hook) is still on: what the
    # phase made and dropped goes with its records.
    def finish(reason)
      @lock.synchronize do
        GC.start(full_mark: false, immediate_sweep: true) if @tracing && @reasons.keys == [reason]
        update(reason, false)
      end
    end

    def want(reason, on)
      @lock.synchronize { update(reason, on) }
    end

    def update(reason, on)
      on ? @reasons[reason] = true : @reasons.delete(reason)
      @scripts.disable if reason == :warmup && !on && @scripts&.enabled?
      if reason == :window && !on && !@hold_records
        @hook_until_gc = GC.count + TAIL_GCS
      elsif reason == :round && on
        @hook_until_gc = nil
      end
      wanted = !@reasons.empty?
      if wanted != @tracing
        wanted ? start_tracing : stop_tracing
        @tracing = wanted
      end
      free_hook(hook_wanted?)
    end

    def hook_wanted?
      @hook_always || @reasons.key?(:window) ||
        ((@reasons.key?(:round) || @round_ending) && !@hold_records) ||
        (!@hook_until_gc.nil? && GC.count < @hook_until_gc)
    end

    # A window's tail is over once TAIL_GCS GCs fell after it.
    def end_tail
      @lock.synchronize do
        @hook_until_gc = nil if @hook_until_gc && GC.count >= @hook_until_gc
        free_hook(hook_wanted?)
      end
    end

    def start_tracing
      first = !@started
      @started = true
      before = enabled_trace_points if first
      # Enables both of objspace's hooks (a hook enabled twice would run twice per event);
      # `update` then sets the free hook as the phase needs it.
      @free_hook&.disable if @free_hook&.enabled?
      ObjectSpace.trace_object_allocations_start
      return unless before

      new = enabled_trace_points - before
      @free_hook = find_free_hook(new)
      count_records(new) if @hook_always && @free_hook
    end

    # Under `none`, where the hook would stay on for the malloc measure's sake: with the records
    # counted (`RecordCount`) the measure takes them off, and the hook goes as elsewhere (warm-up
    # then ends with a dump of its own, as under valgrind).
    def count_records(new)
      @records = RecordCount.locate((new - [@free_hook]).first, @free_hook)
      return unless @records

      @hook_always = false
      @settles = @sampled && !Pause.dump_arity.nil?
    end

    def stop_tracing
      ObjectSpace.trace_object_allocations_stop
    end

    # Without the hook found (the program traces allocations itself), it goes on and off with
    # tracing, as objspace has it.
    def free_hook(on)
      return unless @free_hook
      return if @free_hook.enabled? == on

      on ? @free_hook.enable : @free_hook.disable
    end

    def enabled_trace_points
      ObjectSpace.each_object(TracePoint).select(&:enabled?)
    end

    # Of objspace's two hooks (new: the trace points tracing enabled), the free hook is the one
    # under which a new object gets no record. Nil when they are not exactly two.
    def find_free_hook(new)
      return nil unless new.size == 2

      new.each(&:disable)
      new.find do |hook|
        hook.enable
        recorded = ObjectSpace.allocation_sourcefile(Object.new)
        hook.disable
        recorded.nil?
      end
    ensure
      new.each(&:enable) if new.size == 2
    end
  end

  # Containers held by constants (`ENTRIES = []`), by address, with the line that assigned the
  # constant (Module#const_source_location): the file:line of a growing container whose heap
  # dump record has no allocation site (made while allocations were not traced, or under
  # `--no-alloc-sites`). Listed while the program is paused, right after the dump, so that the
  # addresses are the dump's. Only unfrozen Arrays and Hashes, what a program appends to; never
  # an autoloaded constant (reading it would load code) nor one that is not defined (an autoload
  # whose file is loaded and never defined it: reading it would call the module's
  # const_missing); at most LIMIT of them. Every method is called as Module and Kernel define
  # it, whatever a class overrides.
  module Constants
    LIMIT = 10_000
    CONSTANTS = Module.instance_method(:constants)
    NAME = Module.instance_method(:name)
    CONST_GET = Module.instance_method(:const_get)
    AUTOLOAD = Module.instance_method(:autoload?)
    DEFINED = Module.instance_method(:const_defined?)
    FROZEN = Kernel.instance_method(:frozen?)
    SOURCE = Module.method_defined?(:const_source_location) ? Module.instance_method(:const_source_location) : nil

    def self.available?
      !SOURCE.nil? && defined?(::Fiddle) && ::Fiddle.respond_to?(:dlwrap)
    end

    # Whether the listing's addresses are still the dump's: no GC since it (`gc_at_dump`,
    # GC.count then) may have compacted the heap.
    def self.listable?(gc_at_dump)
      available? && (GC.count == gc_at_dump || !(GC.respond_to?(:auto_compact) && GC.auto_compact))
    end

    # [{address:, name:, file:, line:}], until `deadline`.
    def self.list(deadline)
      found = []
      verbose = $VERBOSE
      $VERBOSE = nil # reading a deprecated constant warns
      ObjectSpace.each_object(Module) do |mod|
        break if found.size >= LIMIT || LeakhuntAgent.clock > deadline

        of_module(mod, found)
      end
      found
    ensure
      $VERBOSE = verbose
    end

    def self.of_module(mod, found)
      names = CONSTANTS.bind_call(mod, false)
      return if names.empty?

      owner = NAME.bind_call(mod) # nil for an anonymous module: not listed
      return if owner.nil? || owner.start_with?('LeakhuntAgent')

      names.each do |name|
        next if AUTOLOAD.bind_call(mod, name) || !DEFINED.bind_call(mod, name, false)

        value = CONST_GET.bind_call(mod, name, false)
        next unless (Array === value || Hash === value) && !FROZEN.bind_call(value)

        file, line = SOURCE.bind_call(mod, name)
        next unless file && line.is_a?(Integer) && line.positive? # ARGV and the like: ["ruby", 0]

        found << { address: ::Fiddle.dlwrap(value), name: mod.equal?(Object) ? name.to_s : "#{owner}::#{name}",
                   file: file.to_s, line: line }
        break if found.size >= LIMIT
      rescue StandardError, ScriptError
        next # a constant that cannot be read: the module's other constants are still listed
      end
    rescue StandardError, ScriptError
      nil # a module whose constants or name cannot be read: not listed
    end
  end

  # The time one snapshot round may take, from the seconds leakhunt waits for the answer: the
  # scan (the program runs meanwhile) must end within the first quarter, the parked steps within
  # three quarters, and the rest is for the sidecar and leakhunt's own capture. A parked step
  # that overruns ends the parked part: the steps after it are skipped. The program's threads
  # resume by themselves at the parked deadline, even while the agent thread is still stuck.
  class Round
    DEFAULT_BUDGET = 60.0

    attr_reader :started, :scan_deadline, :park_deadline, :timings, :overruns, :skipped

    def initialize(agent, index, budget)
      @agent = agent
      @index = index
      @current = nil
      @told = {}
      budget = DEFAULT_BUDGET unless budget&.finite? && budget.positive?
      @started = agent.clock
      @scan_deadline = @started + (budget * 0.25)
      @park_deadline = @started + (budget * 0.75)
      @timings = {}
      @overruns = [] # [[step, seconds it had]]
      @skipped = []
      @done = {}
      @mark = @started
    end

    # Runs a step that must end by `deadline` (passed to the block), unless a parked step
    # before it overran.
    def step(name, deadline)
      if @overruns.any? { |step, _| step != 'scan' }
        @skipped << name
        return
      end
      budget = deadline - @agent.clock
      @current = [name, budget]
      yield deadline
      @current = nil
      @done[name] = true
      record(name)
      @overruns << [name, budget] if @agent.clock > deadline
    end

    # Tells leakhunt, once per step, that the step overran: from the first parked thread that
    # resumes at the deadline while the step still runs, or after the step.
    def tell_overrun(name = nil, budget = nil)
      name, budget = @current unless name
      return if name.nil? || @told.key?(name)

      @told[name] = true
      @agent.reply(format('overran %d %s %.1f', @index, name, budget))
    end

    def record(name)
      now = @agent.clock
      @timings[name] = now - @mark
      @mark = now
    end

    def done?(name)
      @done.key?(name)
    end
  end

  # How a round keeps the program's other Ruby threads still from its second GC to the end of
  # its counts, so that the dump and the LSan check show what that GC left.
  #
  # Held (the default): the agent thread keeps Ruby's GVL throughout. The GC, the malloc measure
  # and the LSan check are C calls that keep it (Fiddle functions made with `need_gvl`); the
  # dump goes into a String made before the GC with room for all of it (dump_all through Ruby's
  # IO releases the GVL at every write, and a dump that grew its own String would count toward
  # Ruby's malloc limit: the GC that then falls while the round's own objects are traced leaves
  # records newer than the dump, which leakhunt cannot tell from true ones), then into its file
  # through write(2) (`Writer`). The agent thread's priority is raised to the highest, so that
  # the VM's timer hands the GVL to another thread only after eight time slices of the agent's
  # Ruby code (a C call counts as one slice however long it runs); a thread the agent's thread
  # starts meanwhile (a finalizer's) inherits that priority. What can still let the program
  # run: a finalizer of the second GC (it runs in the agent's thread) that sleeps, waits or does
  # I/O, or steps longer than those slices. A watchdog thread notices: it gets the GVL only
  # when the agent lets go, and then records it and, at the deadline, tells leakhunt which step
  # overran, as a parked thread would.
  #
  # Parked: a TracePoint stops every other thread at its next line, call or C return (`Parking`).
  # CRuby rewrites every instruction sequence into tracing variants the first time such events
  # are enabled and never rewrites them back, so instruction-heavy code runs up to 1.6× slower
  # for the rest of the process after a first parked round (BENCHMARKS.md). Used only where
  # holding cannot work: a dump expected bigger than LEAKHUNT_HELD_DUMP_MAX MiB (the String
  # costs the program that much memory during the round), a fiddle that cannot keep the GVL
  # through a C call, or an objspace without the `_dump_all` it is written with.
  class Pause
    HELD_DUMP_MAX_MIB = 256
    # Bytes of dump per live object, for the estimate (238-390 measured, the most on Ruby 3.3
    # with allocation sites).
    BYTES_PER_OBJECT = 350
    HIGHEST_PRIORITY = 3
    RELEASED = 'the program ran during the snapshot (a finalizer or a long step let go of the GVL): ' \
               'the dump may hold objects made after its GC'

    attr_reader :mode

    # Bytes a held round malloc'd for its dump before its GC (0 when parked).
    def buffer_bytes
      @buffer_bytes || 0
    end

    def self.held_dump_max
      mib = Float(ENV.fetch('LEAKHUNT_HELD_DUMP_MAX', HELD_DUMP_MAX_MIB.to_s), exception: false)
      ((mib || HELD_DUMP_MAX_MIB) * (1 << 20)).to_i
    end

    # objspace's `_dump_all` (what dump_all calls) takes (output, full, since) up to Ruby 3.1
    # and (output, full, since, shapes) from 3.2; nil without a known one.
    def self.dump_arity
      return @dump_arity if defined?(@dump_arity)

      arity = (ObjectSpace.method(:_dump_all).arity rescue nil)
      @dump_arity = [3, 4].include?(arity) ? arity : nil
    end

    # The heap dump into `buffer` (a String made with room for it), in one C call.
    def self.dump_into(buffer)
      args = [buffer, false, nil]
      args << 0 if dump_arity == 4
      ObjectSpace.send(:_dump_all, *args)
    end

    # `can_hold`: every C call of the paused steps keeps the GVL; `last_dump`: bytes of this
    # process's previous dump, or nil.
    def initialize(agent, deadline, can_hold, last_dump, &on_deadline)
      @agent = agent
      @deadline = deadline
      @on_deadline = on_deadline
      @can_hold = can_hold && !Pause.dump_arity.nil?
      @last_dump = last_dump
      @parking = Parking.new(agent, deadline, &on_deadline)
      @mode = nil
      @paused = false
      @released = false
    end

    # Right after the round's first GC, before its second. The dump is expected no bigger than
    # the previous one or the live objects' estimate, whichever is bigger; its buffer gets half
    # as much again besides (pages it never writes cost no memory), since a dump that outgrows
    # it grows it as dump_all's own String would, with the GC that brings (see above).
    def start(errors)
      @errors = errors
      expected = [@last_dump || 0, GC.stat(:heap_live_slots) * BYTES_PER_OBJECT].max
      if @can_hold && expected <= Pause.held_dump_max
        @mode = 'held'
        @capacity = (expected * 3 / 2) + (1 << 20)
        @buffer = String.new(capacity: @capacity)
        @buffer_bytes = @capacity + 1
        @priority = Thread.current.priority
        Thread.current.priority = HIGHEST_PRIORITY
        @paused = true
        @watchdog = start_watchdog
      else
        @mode = 'parked'
        @parking.start(errors)
      end
    end

    def held?
      @mode == 'held'
    end

    # The heap dump as a String (held) or written into `file` (parked).
    def dump(file)
      return ObjectSpace.dump_all(output: file) unless held?

      dump = Pause.dump_into(@buffer)
      if dump.bytesize > @capacity
        @errors << format('the heap dump outgrew its buffer (%.1f MiB > %.1f MiB): objects made right after ' \
                          'this round may show the agent\'s allocation sites', dump.bytesize / 1048576.0,
                          @capacity / 1048576.0)
      end
      dump
    end

    def stop
      case @mode
      when 'held'
        return unless @paused

        @paused = false
        Thread.current.priority = @priority
        @watchdog&.kill
        @errors << RELEASED if @released
      when 'parked' then @parking.stop
      end
    end

    # A held round's dump, once written: its memory goes back at once.
    def release_buffer
      @buffer&.clear
      @buffer = nil
    end

    private

    # The watchdog, or nil when no thread can be started (a program's enclosed ThreadGroup).
    def start_watchdog
      watchdog = Thread.new { watch }
      watchdog.name = 'leakhunt-pause' if watchdog.respond_to?(:name=)
      watchdog.report_on_exception = false
      watchdog.thread_variable_set(:fork_safe, true)
      watchdog
    rescue ThreadError
      nil
    end

    def watch
      return unless @paused

      @released = true
      left = @deadline - @agent.clock
      sleep left if left.positive?
      @on_deadline&.call if @paused
    rescue StandardError => e
      @agent.note_error("pause watchdog: #{e.class}: #{e.message}")
    end
  end

  # Stops every other Ruby thread at its next line, call or C return while a block runs.
  # Threads blocked in C without the GVL stay there, and park as they come back. A parked thread
  # resumes by itself at the deadline, whatever happens to the agent thread meanwhile.
  class Parking
    SETTLE = 2.0

    # `on_deadline` runs once, in the first parked thread that resumes because the deadline
    # passed while the agent still held the program.
    def initialize(agent, deadline, &on_deadline)
      @agent = agent
      @deadline = deadline
      @on_deadline = on_deadline
      @me = Thread.current
      @lock = Mutex.new
      @resume = ConditionVariable.new
      @parked = {}.compare_by_identity
      @parking = false
      @trace = nil
    end

    def start(errors)
      @parking = true
      @trace = TracePoint.new(:line, :call, :b_call, :c_return) { park(Thread.current) }
      @trace.enable
      settle_by = [@agent.clock + SETTLE, @deadline].min
      until Thread.list.all? { |t| t.equal?(@me) || !t.alive? || @parked.key?(t) || t.status == 'sleep' }
        if @agent.clock > settle_by
          errors << 'some threads kept running during the snapshot; the dump may hold objects they made'
          break
        end
        Thread.pass
      end
    end

    def stop
      @trace&.disable
      @lock.synchronize do
        @parking = false
        @resume.broadcast
      end
    end

    private

    def park(thread)
      return if thread.equal?(@me) || !@parking

      @lock.synchronize do
        @parked[thread] = true
        while @parking && (left = @deadline - @agent.clock).positive?
          @resume.wait(@lock, left)
        end
        @parked.delete(thread)
        late = @parking ? @on_deadline : nil
        @on_deadline = nil if late
        late&.call
      end
    rescue StandardError => e
      @agent.note_error("parking: #{e.class}: #{e.message}")
    end
  end

  # Fiddle's C extension, loaded from the Ruby installation itself. The application's bundle
  # decides what `require 'fiddle'` may load: from Ruby 3.5 fiddle is a bundled gem that a
  # Gemfile without it refuses (LoadError), and 3.4 prints a deprecation warning on the program's
  # stderr. The extension file is found by path and loaded with Ruby's own require (RubyGems'
  # and Bundler's wrappers skipped, so nothing is activated and nothing warns); the agent uses
  # only what the C extension defines.
  module FiddleExtension
    def self.load
      return true if defined?(::Fiddle::Function) && defined?(::Fiddle::Handle)

      path = candidates.find { |p| File.file?(p) }
      raise LoadError, 'no fiddle extension in the Ruby installation' unless path

      LeakhuntAgent.own_require(path) { |file| builtin_require(file) }
      # Fiddle::Function#call records errno through Fiddle.last_error=, which fiddle.rb defines.
      # A fallback in an extending module: fiddle.rb, if the program loads it, takes precedence
      # without a redefinition warning.
      ::Fiddle.extend(LastError) unless ::Fiddle.respond_to?(:last_error=)
      true
    end

    # A Fiddle::Function that keeps the GVL while it runs, so that a held round (`Pause`) stays
    # held through it; [function, true]. A fiddle without `need_gvl:` (before 1.0.1) gives one
    # that releases it, and false.
    def self.function(pointer, args, ret)
      [::Fiddle::Function.new(pointer, args, ret, need_gvl: true), true]
    rescue ArgumentError
      [::Fiddle::Function.new(pointer, args, ret), false]
    end

    # The C extension names its types Fiddle::Types::INT from fiddle 1.1 (Ruby 3.2) on, and
    # Fiddle::TYPE_INT before; fiddle.rb, not loaded here, makes the one from the other.
    def self.type(name)
      return ::Fiddle::Types.const_get(name) if defined?(::Fiddle::Types)

      ::Fiddle.const_get("TYPE_#{name}")
    end

    module LastError
      def last_error=(error)
        Thread.current[:__FIDDLE_LAST_ERROR__] = error
      end
    end

    # The default gem's extension (Ruby <= 3.4) in the architecture directory, then the bundled
    # gem's (Ruby >= 3.5) in the installation's own gem directory, newest first.
    def self.candidates
      ext = RbConfig::CONFIG['DLEXT'] || 'so'
      found = [File.join(RbConfig::CONFIG['rubyarchdir'].to_s, "fiddle.#{ext}")]
      if defined?(Gem) && Gem.respond_to?(:default_dir)
        dir = Gem.default_dir
        gems = Dir.glob(File.join(dir, 'extensions', '*', '*', 'fiddle-*', "fiddle.#{ext}")) +
               Dir.glob(File.join(dir, 'gems', 'fiddle-*', 'lib', "fiddle.#{ext}"))
        found.concat(gems.sort_by { |p| version_of(p) }.reverse)
      end
      found
    end

    def self.version_of(path)
      digits = path[%r{/fiddle-([0-9.]+)/}, 1].to_s
      digits.split('.').map(&:to_i)
    end

    # Kernel#require as Ruby defines it: RubyGems keeps it as gem_original_require.
    def self.builtin_require(path)
      if Kernel.private_method_defined?(:gem_original_require)
        Kernel.instance_method(:gem_original_require).bind_call(Kernel, path)
      else
        Kernel.instance_method(:require).bind_call(Kernel, path)
      end
    end
  end

  # C extensions (`.so` on Linux, `.bundle` on macOS): which classes and modules each one
  # defines, and what the program does with them. Their native memory is only seen from
  # outside (a native site whose stack passes through the extension), so the agent records
  # what links it to Ruby: the classes and the names of their C methods, their instances'
  # lifecycle (created, released) and where their C methods are called from.
  #
  # Definitions are seen as they happen: hooks on Module#method_added, #singleton_method_added
  # and Class#inherited note each method and class defined straight from C code running under
  # a `require` (the hook's caller is the C `require` frame: no Ruby frame in between, as there
  # is for `def` and for C methods such as `attr_accessor` or `Struct.new`). The `.so` that then
  # appears in $LOADED_FEATURES is the extension that defined them. Only those methods are
  # wrapped: an extension that adds `to_json` to String does not get String's other methods.
  class Extensions
    NATIVE_FEATURE = /\.(?:so|bundle)\z/
    REQUIRES = %w[require require_relative load].freeze
    # Methods that release what an instance holds in C, read from the Init functions of real
    # gems (the C method and the function behind it):
    #   close    sqlite3 Database/Statement (sqlite3_rb_close), mysql2 Client/Statement,
    #            zlib ZStream (rb_zstream_end) and GzipFile, msgpack Buffer, grpc Call, and as
    #            an alias grpc Channel/Server (of destroy) and pg Connection (of finish)
    #   finish   pg Connection (pgconn_finish) and Cancon, sqlite3 Backup, zlib GzipFile
    #   free     mysql2 Result (rb_mysql_result_free_)
    #   clear    pg Result (pg_result_clear)
    #   destroy  grpc Channel (grpc_rb_channel_destroy) and Server
    #   end      zlib ZStream
    # plus the verbs other bindings use for their release functions (release, dispose,
    # shutdown, disconnect, terminate, unref). nokogiri's and msgpack's objects, and zlib's when
    # the program does not call close, are freed by the GC's free function: no release needed.
    # The order is the one a suggestion prefers when a class has several.
    RELEASE_METHODS = %i[close finish free destroy release dispose end clear shutdown disconnect
                         terminate unref].freeze
    # Not wrapped for call sites: Ruby calls these itself.
    UNCOUNTED = %i[initialize_copy initialize_clone initialize_dup method_missing respond_to?
                   respond_to_missing?].freeze
    # Sites are recorded for every call of a method up to this many, then for one call in
    # SAMPLE_EVERY: a hot C method (a parser's #parse) then costs one counter increment.
    EXACT_CALLS = 256
    SAMPLE_EVERY = 32
    MAX_SITES = 50

    # Call counts of one module's C methods (instance or singleton), by method and call site.
    class Calls
      def initialize(sites)
        @sites = sites
        @counts = Hash.new(0)
        @at = Hash.new { |h, name| h[name] = Hash.new(0) }
      end

      def count(name)
        n = (@counts[name] += 1)
        return unless n <= EXACT_CALLS || (n % SAMPLE_EVERY).zero?

        _, user = @sites.creation_site
        return unless user

        at = @at[name]
        key = "#{user.path}:#{user.lineno}"
        at[key] += 1 if at.key?(key) || at.size < MAX_SITES
      end

      # A forked child counts its own calls.
      def restart
        @counts.clear
        @at.clear
      end

      def to_a(singleton)
        @counts.map do |name, n|
          sites = @at[name].sort_by { |_, c| -c }.first(20).map do |key, c|
            file, _, line = key.rpartition(':')
            { file: file, line: line.to_i, count: c }
          end
          { method: name.to_s, singleton: singleton, count: n, sampled: n > EXACT_CALLS, called_at: sites }
        end
      end
    end

    def initialize(agent, inventory)
      @agent = agent
      @inventory = inventory
      @extensions = {}                    # feature path => [module]
      @defined = {}.compare_by_identity   # module => { instance: [names], singleton: [names] }
      @checked = ObjectSpace::WeakMap.new # module => $LOADED_FEATURES.size when last looked at
      @pending = {}.compare_by_identity   # what native code defined, its extension not yet known
      @pending_mark = 0
      @calls = {}.compare_by_identity     # module => [instance Calls, singleton Calls]
      @lock = Mutex.new
      @library_dirs = [RbConfig::CONFIG['rubyarchdir'], RbConfig::CONFIG['archdir']].compact.reject(&:empty?).uniq
    end

    def install
      extensions = self
      definitions = Module.new do
        define_method(:method_added) do |name|
          extensions.defined(self, name, false)
          super(name)
        end
        define_method(:singleton_method_added) do |name|
          extensions.defined(self, name, true)
          super(name)
        end
        private :method_added, :singleton_method_added
      end
      subclasses = Module.new do
        define_method(:inherited) do |subclass|
          extensions.defined(subclass, nil, false)
          super(subclass)
        end
        private :inherited
      end
      @inventory.own(definitions)
      @inventory.own(subclasses)
      Module.prepend(definitions)
      Class.prepend(subclasses)
    end

    # Called for every method definition and subclass in the program. Once per module and
    # moment (loaded-features count, require depth) it looks at who defines (a backtrace
    # entry); a module native code is defining meanwhile takes its further methods at once.
    def defined(mod, name, singleton)
      @inventory.defined(mod)
      epoch = $LOADED_FEATURES.size
      settle if epoch > @pending_mark && !@pending.empty?
      return if @lock.owned? || Thread.current[:leakhunt_own_require]

      unless epoch == @pending_mark && @pending.key?(mod)
        # A nested require is a new moment too: a file may define Foo, then require the
        # extension that adds Foo's C methods, before either is a loaded feature.
        moment = (epoch << 8) | ((Thread.current[:leakhunt_require_depth] || 0) & 0xff)
        return if @checked[mod] == moment

        @checked[mod] = moment
        from = caller_locations(2, 1)&.first
        return unless from && REQUIRES.include?(from.base_label)
      end
      @lock.synchronize do
        settle_locked
        @pending_mark = epoch if @pending.empty?
        names = (@pending[mod] ||= { instance: [], singleton: [] })
        names[singleton ? :singleton : :instance] << name if name
      end
    rescue StandardError => e
      @agent.note_error("noting a definition: #{e.class}: #{e.message}")
    end

    # Gives what native code defined so far to the extension whose `.so` has appeared since.
    def settle
      return if @pending.empty? || @lock.owned?

      @lock.synchronize { settle_locked }
    rescue StandardError => e
      @agent.note_error("settling extensions: #{e.class}: #{e.message}")
    end

    def settle_locked
      return if @pending.empty? || $LOADED_FEATURES.size <= @pending_mark

      path = $LOADED_FEATURES[@pending_mark..].find { |f| NATIVE_FEATURE.match?(f) }
      return unless path

      pending = @pending
      @pending = {}.compare_by_identity
      add(path, pending)
    end

    def add(path, pending)
      # The ffi gem's own extension is the FFI inventory's to describe.
      return if File.basename(path).start_with?('ffi_c.')

      mods = (@extensions[path] ||= [])
      pending.each do |mod, names|
        next if mod.singleton_class?

        mods << mod unless mods.any? { |m| m.equal?(mod) }
        mine = (@defined[mod] ||= { instance: [], singleton: [] })
        mine[:instance] |= names[:instance]
        mine[:singleton] |= names[:singleton]
      end
      third_party = @library_dirs.none? { |dir| path.start_with?("#{dir}/") }
      pending.each_key do |mod|
        next if mod.singleton_class?

        begin
          released = release_methods(mod)
          unless released.empty?
            @inventory.instrument(mod, released.map { |n| { name: n.to_s, singleton: false, role: 'release' } })
          end
          count_calls(mod, released) if third_party
        rescue StandardError => e
          @agent.note_error("hooking #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
        end
      end
    end

    # The release methods a class has from C extensions (its own or inherited: Zlib::Deflate
    # has ZStream's), never core ones (SQLite3::Blob < String does not release by String#clear).
    def release_methods(mod)
      return [] unless mod.is_a?(Class) && !(mod <= Exception)

      RELEASE_METHODS.select do |name|
        m = visible(mod, name)
        m && m.source_location.nil? && @defined[m.owner]&.dig(:instance)&.include?(name)
      end
    end

    # The method `name` of instances of `mod`, under any hook the agent prepended.
    def visible(mod, name)
      m = mod.instance_method(name)
      m = m.super_method while m && @inventory.own?(m.owner)
      m
    rescue NameError
      nil
    end

    # The C methods the extension defined on `mod` (instance or singleton) that are still the
    # ones Ruby calls.
    def c_methods(mod, singleton)
      target = singleton ? mod.singleton_class : mod
      names = @defined[mod]&.dig(singleton ? :singleton : :instance) || []
      names.select do |name|
        m = visible(target, name)
        m && m.owner.equal?(target) && m.source_location.nil?
      end
    end

    # Wraps the C methods an extension defined on `mod` (a class's `initialize` too, unless
    # its lifecycle is counted) so each call counts and, sampled, records where it came from.
    def count_calls(mod, released)
      counted = (@calls[mod] ||= [Calls.new(@agent.sites), Calls.new(@agent.sites)])
      [false, true].each do |singleton|
        target = singleton ? mod.singleton_class : mod
        names = c_methods(mod, singleton) - UNCOUNTED
        names -= released + [:initialize] unless singleton || released.empty?
        names -= %i[new allocate] if singleton
        next if names.empty?

        calls = counted[singleton ? 1 : 0]
        hook = Module.new
        @inventory.own(hook)
        names.each { |name| LeakhuntAgent.wrap(hook, target, name) { calls.count(name) } }
        target.prepend(hook)
      end
    rescue StandardError => e
      @agent.note_error("counting calls of #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
    end

    # A forked child counts its own calls from now on.
    def restart_counts
      @calls.each_value { |counted| counted.each(&:restart) }
    end

    def to_sidecar
      settle
      @extensions.map do |path, mods|
        { path: path, gem: gem_of(path), modules: mods.map { |mod| describe(mod) } }
      end
    end

    def describe(mod)
      instance, singleton = @calls[mod]
      { name: LeakhuntAgent.name_of(mod),
        class: mod.is_a?(Class),
        methods: c_methods(mod, false).map(&:to_s).sort,
        singleton_methods: c_methods(mod, true).map(&:to_s).sort,
        release_methods: release_methods(mod).map(&:to_s),
        calls: (instance&.to_a(false) || []) + (singleton&.to_a(true) || []) }
    rescue StandardError => e
      @agent.note_error("describing #{LeakhuntAgent.name_of(mod)}: #{e.class}: #{e.message}")
      { name: LeakhuntAgent.name_of(mod) }
    end

    # "sqlite3 1.4.2" when a loaded gem holds the file.
    def gem_of(path)
      return nil unless defined?(Gem) && Gem.respond_to?(:loaded_specs)

      spec = Gem.loaded_specs.values.find do |s|
        path.start_with?("#{s.full_gem_path}/") || (s.respond_to?(:extension_dir) && path.start_with?("#{s.extension_dir}/"))
      end
      spec && "#{spec.name} #{spec.version}"
    rescue StandardError
      nil
    end
  end

  # LeakSanitizer's check, through Fiddle's C extension. Ruby's heap pages are mmap'ed, which
  # LSan does not scan, so everything only Ruby objects point to would look leaked and fill
  # LSan's 5,000-record cap; registering the pages that hold objects as root regions leaves the
  # real leaks. Pages next to each other go in as one region: LSan reads /proc/self/maps once
  # for every region at every check (gcc 12's `ProcessRootRegion`), and one region per page
  # made a check of 1,249 pages take 1.1 s, against 0.13 s for their 20 runs (BENCHMARKS.md).
  # Made when the agent starts: a round never loads code (a program thread parked inside
  # RubyGems' require holds its monitor, and class bodies run the agent's hooks).
  class Lsan
    def initialize
      FiddleExtension.load
      handle = ::Fiddle::Handle::DEFAULT
      # The check keeps the GVL, so that a round holding it (`Pause`) keeps the program's Ruby
      # threads out of it; LSan stops every thread while it scans anyway. A fiddle that cannot
      # keep it makes rounds park the threads instead.
      @check, @holds_gvl = FiddleExtension.function(handle['__lsan_do_recoverable_leak_check'], [],
                                                    FiddleExtension.type(:INT))
      args = [FiddleExtension.type(:VOIDP), FiddleExtension.type(:SIZE_T)]
      @register, = FiddleExtension.function(handle['__lsan_register_root_region'], args, FiddleExtension.type(:VOID))
      @unregister, = FiddleExtension.function(handle['__lsan_unregister_root_region'], args, FiddleExtension.type(:VOID))
      size = (GC::INTERNAL_CONSTANTS[:HEAP_PAGE_SIZE] rescue nil) || 65_536
      @page_mask = ~(size - 1)
      @page_size = size
      @regions = {} # start => bytes, as registered
    end

    def holds_gvl?
      @holds_gvl
    end

    def check
      pages = {}
      ObjectSpace.each_object(BasicObject) { |o| pages[::Fiddle.dlwrap(o) & @page_mask] = true }
      regions = runs(pages.keys.sort!)
      # LSan unregisters only a region registered with the same start and size.
      @regions.each { |start, bytes| @unregister.call(start, bytes) unless regions[start] == bytes }
      regions.each { |start, bytes| @register.call(start, bytes) unless @regions[start] == bytes }
      @regions = regions
      @check.call
    end

    # Sorted page addresses as runs of adjacent pages: start => bytes.
    def runs(pages)
      regions = {}
      start = last = nil
      pages.each do |page|
        unless last && page == last + @page_size
          regions[start] = last + @page_size - start if start
          start = page
        end
        last = page
      end
      regions[start] = last + @page_size - start if start
      regions
    end
  end

  # Under `--backend none`, what glibc's malloc holds in use right after a round's full GC, so
  # that leakhunt can tell native memory no Ruby object accounts for. glibc's malloc_info(0,
  # FILE*) writes its totals as XML; Fiddle cannot take mallinfo2's struct returned by value
  # portably. The XML goes into a file of this process in leakhunt's private directory (0600),
  # and from there verbatim into the sidecar: leakhunt parses it. Made when the agent starts
  # (a round loads no code); elsewhere than Linux/glibc, or without Fiddle, nothing is made and
  # rounds record nothing.
  class MallocInfo
    HOW = 'glibc malloc_info(0, FILE*) after the round\'s full GC'

    def self.make(dir)
      return nil unless RUBY_PLATFORM.include?('linux') && dir && File.directory?(dir)

      FiddleExtension.load
      handle = ::Fiddle::Handle::DEFAULT
      # Only glibc has gnu_get_libc_version; musl's malloc has no malloc_info.
      handle['gnu_get_libc_version']
      new(handle, dir)
    rescue StandardError, ScriptError
      nil
    end

    def initialize(handle, dir)
      ptr = FiddleExtension.type(:VOIDP)
      int = FiddleExtension.type(:INT)
      @fopen, held = FiddleExtension.function(handle['fopen'], [ptr, ptr], ptr)
      @fclose, = FiddleExtension.function(handle['fclose'], [ptr], int)
      @malloc_info, = FiddleExtension.function(handle['malloc_info'], [int, ptr], int)
      @holds_gvl = held
      @dir = dir
    end

    def holds_gvl?
      @holds_gvl
    end

    # Before the round pauses the program (File.open lets other threads run): this process's
    # file, a fork making its own, created 0600 here; fopen's "w" then truncates it and keeps
    # its mode.
    def prepare
      @path = File.join(@dir, "malloc-info-#{Process.pid}.xml")
      File.open(@path, File::WRONLY | File::CREAT | File::TRUNC, 0o600) {}
    rescue StandardError
      @path = nil
    end

    # While the program is paused: glibc writes its XML into the file; true when it did. A
    # failed measure is no error of the round.
    def measure
      return false unless @path

      file = @fopen.call("#{@path}\0", "w\0")
      return false if file.to_i.zero?

      status = @malloc_info.call(0, file)
      @fclose.call(file)
      status.zero?
    rescue StandardError, ScriptError
      false
    end

    # { how:, xml: } once the program runs again, or nil.
    def read
      { how: HOW, xml: File.binread(@path) }
    rescue StandardError
      nil
    end
  end

  # write(2) through Fiddle, keeping the GVL: a held round writes its dump into the file before
  # it lets the program go (IO#write releases the GVL, and taking it back from a busy program
  # costs up to a time slice per other thread). Made when the agent starts; nil without
  # Fiddle, and held rounds then write once the program runs again.
  class Writer
    def self.make
      FiddleExtension.load
      int = FiddleExtension.type(:INT)
      write, held = FiddleExtension.function(::Fiddle::Handle::DEFAULT['write'],
                                             [int, FiddleExtension.type(:VOIDP), FiddleExtension.type(:SIZE_T)], FiddleExtension.type(:SSIZE_T))
      held ? new(write) : nil
    rescue StandardError, ScriptError
      nil
    end

    def initialize(write)
      @write = write
    end

    # All of `string` into the file descriptor `fd`, or raises.
    def write(fd, string)
      base = ::Fiddle::Pointer[string]
      done = 0
      while done < string.bytesize
        n = @write.call(fd, base + done, string.bytesize - done)
        raise IOError, "write(2) of the heap dump returned #{n}" unless n.positive?

        done += n
      end
    end
  end

  class << self
    attr_reader :sites

    # Module#name as Module defines it, whatever `mod` overrides (without making a Method for
    # each call: the wrapper scan asks it of every module).
    def name_of(mod)
      (Constants::NAME.bind_call(mod) rescue nil) || mod.inspect
    end

    def alloc_sites?
      @alloc_sites
    end

    def sampled_sites?
      @allocation_sites&.sampled? || false
    end

    # Defines `name` in `hook` (a module the agent prepends to `target`) to run `before` with
    # the receiver, then the method it covers, with the same arguments, block and visibility.
    def wrap(hook, target, name, &before)
      hook.send(:define_method, name) do |*args, &block|
        begin
          before.call(self)
        rescue StandardError => e
          LeakhuntAgent.note_error("counting #{LeakhuntAgent.name_of(target)}##{name}: #{e.class}: #{e.message}")
        end
        super(*args, &block)
      end
      hook.send(:ruby2_keywords, name)
      hook.send(:private, name) if target.private_method_defined?(name)
      hook.send(:protected, name) if target.protected_method_defined?(name)
    end

    # A library the agent itself loads: not one of the program's extensions.
    def own_require(name)
      Thread.current[:leakhunt_own_require] = true
      block_given? ? yield(name) : require(name)
    ensure
      Thread.current[:leakhunt_own_require] = nil
    end

    def clock
      Process.clock_gettime(Process::CLOCK_MONOTONIC) - @t0
    end

    def note_error(message)
      @errors << message if @errors.size < 100
    end

    def start
      @socket_path = ENV['LEAKHUNT_SOCKET']
      @bundle = ENV['LEAKHUNT_BUNDLE']
      return if @socket_path.nil? || @socket_path.empty? || @bundle.nil? || @bundle.empty?

      require 'rbconfig'
      require 'socket'
      require 'objspace'
      @t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      @errors = []
      @backend = ENV['LEAKHUNT_BACKEND'].to_s
      # libmalloc read it when this process started; the processes the program starts (shims,
      # `system`, spawned tools) would each log their own stacks and print their own
      # "MallocStackLogging: ..." lines on the user's stderr. Forks keep recording.
      ENV.delete('MallocStackLogging') if @backend == 'leaks'
      @exit_wait = Float(ENV['LEAKHUNT_EXIT_WAIT'] || '30', exception: false) || 30.0
      @command = Json.dump([$PROGRAM_NAME.to_s, *ARGV.map(&:to_s)])
      return unless arm(Process.ppid, false)

      @alloc_sites = %w[1 sampled].include?(ENV['LEAKHUNT_ALLOC_SITES'])
      if @alloc_sites
        @allocation_sites = AllocationSites.new(ENV['LEAKHUNT_ALLOC_SITES'] == 'sampled', @backend,
                                                File.dirname(@socket_path))
        @allocation_sites.start
      end
      @frame_sites = FrameSites.make if @backend == 'lsan'
      @sites = Sites.new(@frame_sites)
      @inventory = Inventory.new(self)
      @inventory.hook_ffi
      prepare_lsan
      @malloc_info = MallocInfo.make(File.dirname(@socket_path)) if @backend == 'none'
      @writer = Writer.make
      @extensions = Extensions.new(self, @inventory)
      @extensions.install
      install_hooks
      start_serving
      hook_fork
      at_exit { at_exit_hook }
    rescue Exception => e # rubocop:disable Lint/RescueException -- never break the program
      warn "leakhunt agent: not started: #{e.class}: #{e.message}"
    end

    # This process's session with leakhunt: fresh locks and state, a connection, the hello.
    # False when leakhunt does not answer (the agent then stays off).
    def arm(ppid, forked)
      @pid = Process.pid
      @ppid = ppid
      @forked = forked
      @taken = 0
      @lock = Mutex.new
      @cond = ConditionVariable.new
      @write_lock = Mutex.new
      @exiting = false
      @released = false
      # A warm-up dump the program this process ran before an exec left under its pid.
      warmup = AllocationSites.warmup_dump(File.dirname(@socket_path), @pid)
      [warmup, "#{warmup}.tmp"].each do |path|
        File.delete(path)
      rescue SystemCallError
        nil
      end
      @conn = UNIXSocket.new(@socket_path)
      kind = forked ? "forked #{GC.count}" : 'started'
      reply("hello #{PROTOCOL} #{@pid} #{ppid} #{kind}\t#{RUBY_DESCRIPTION}\t#{@command}")
      true
    rescue SystemCallError, IOError
      @conn = nil
      false
    end

    def start_serving
      conn = @conn
      @thread = Thread.new { serve(conn) }
      @thread.name = 'leakhunt-agent' if @thread.respond_to?(:name=)
      @thread.report_on_exception = false
      # Servers that warn about threads started before they fork (puma) leave this one be.
      @thread.thread_variable_set(:fork_safe, true)
    end

    # Every fork path of Ruby 3.1+ calls Process._fork; older Rubies leave forked children
    # without an agent of their own.
    def hook_fork
      return unless Process.respond_to?(:_fork)

      hook = Module.new do
        def _fork
          pid = super
          LeakhuntAgent.after_fork if pid.zero?
          pid
        end
      end
      Process.singleton_class.prepend(hook)
    end

    # In a forked child: the parent's connection is its parent's (only this process's copy of
    # the descriptor is closed), the serving thread did not survive the fork, and what the
    # parent counted stays the parent's. The child connects as a process of its own.
    def after_fork
      inherited = @conn
      @conn = nil
      inherited&.close rescue nil
      return unless arm(@pid, true)

      @inventory.restart_counts(clock)
      @extensions&.restart_counts
      @allocation_sites&.after_fork
      start_serving
    rescue Exception # rubocop:disable Lint/RescueException -- never break the program's fork
      nil
    end

    def install_hooks
      agent = self
      require_hook = Module.new do
        # A full scan only when a top-level require loaded something: programs that require
        # inside methods, or probe for optional libraries, call it again and again.
        define_method(:require) do |path|
          depth = Thread.current[:leakhunt_require_depth] || 0
          Thread.current[:leakhunt_require_depth] = depth + 1
          loaded = false
          begin
            agent.require_started
            loaded = super(path)
          ensure
            Thread.current[:leakhunt_require_depth] = depth
            agent.after_require(depth.zero?, loaded == true)
          end
        end
        private :require
      end
      Kernel.prepend(require_hook)
      @class_ends = TracePoint.new(:end) { |tp| agent.class_body_closed(tp.self) }
      @class_ends.enable
    end

    def require_started
      @allocation_sites&.require_step(1)
    end

    # The scan after a require is part of the load: warm-up settles after it.
    def after_require(top_level, loaded)
      @extensions.settle
      @inventory.hook_ffi
      @inventory.scan_all_unless_busy if top_level && loaded
    rescue StandardError => e
      note_error("after require: #{e.class}: #{e.message}")
    ensure
      @allocation_sites&.require_step(-1, loaded)
    end

    def class_body_closed(mod)
      @inventory.scan_one(mod) if mod.is_a?(Module)
    rescue StandardError => e
      note_error("after class body: #{e.class}: #{e.message}")
    end

    # Answers leakhunt's commands until leakhunt closes the connection (then nothing waits
    # for it any more).
    def serve(conn)
      while (line = conn.gets)
        handle(line.chomp)
        @allocation_sites&.round_over
      end
    rescue Exception # rubocop:disable Lint/RescueException -- the thread ends with the process
      nil
    ensure
      release_exit
    end

    def release_exit
      @lock.synchronize do
        @released = true
        @cond.broadcast
      end
    rescue ThreadError
      nil
    end

    def reply(line)
      @write_lock.synchronize { @conn&.write("#{line}\n") }
    rescue SystemCallError, IOError
      nil
    end

    def handle(line)
      command, number, reason, budget, heap, sidecar = line.split(' ', 6)
      case command
      when 'snapshot'
        index = Integer(number, exception: false)
        return reply("error #{number} snapshot number must be a positive integer") unless index&.positive?
        return reply("error #{index} file names must be plain names in the bundle") unless plain_names?(heap, sidecar)

        begin
          snapshot(index, reason.to_s, Float(budget.to_s, exception: false), heap, sidecar)
          @taken += 1
          reply("ok #{index} #{heap} #{sidecar}")
        rescue Exception => e # rubocop:disable Lint/RescueException -- report, never raise
          reply("error #{index} #{e.class}: #{e.message}".gsub(/\s+/, ' '))
        end
      when 'bye'
        release_exit
      else
        reply("error 0 unknown command #{command.inspect}")
      end
    end

    def plain_names?(*names)
      names.all? { |n| n.is_a?(String) && !n.empty? && !n.include?('/') && n != '.' && n != '..' }
    end

    # One round: scan for wrappers, GC, heap dump, LeakSanitizer check, lifecycle counts, within
    # the seconds leakhunt waits for the answer (`budget`). The inventory lock is held for the
    # whole round, so no program thread is parked inside the agent's own scanning; the round
    # loads no code and runs no program code but the finalizers its GC releases.
    def snapshot(index, reason, budget, heap, sidecar)
      # The files are opened before the round's tracing begins: each open lets the program run
      # (slower, traced) until the agent's thread has the GVL back, up to a time slice.
      @malloc_info&.prepare
      heap_file = File.open(File.join(@bundle, heap), File::WRONLY | File::CREAT | File::TRUNC, 0o600)
      @allocation_sites&.round_started
      round = Round.new(self, index, budget)
      errors = []
      started = round.started
      gc_stat = nil
      measured = false
      pause = nil
      constants = nil
      records = nil
      @inventory.synchronize do
        if @inventory.scan_needed?
          round.step('scan', round.scan_deadline) { |deadline| @inventory.scan_all(deadline) }
        else
          @inventory.refresh_names
        end
        # The heap dump and the LSan check must show what a full GC left: the program's threads
        # are paused (`Pause`) from the second GC to the end of the counts.
        pause = Pause.new(self, round.park_deadline, can_hold?, @dump_bytes) { round.tell_overrun }
        begin
          dump = nil
          round.step('gc', round.park_deadline) do
            # A first GC runs unpaused, so the finalizers of what the program dropped cannot
            # wait for a parked thread's lock (those of what dies meanwhile still may: the
            # parked threads resume at the deadline then). The program is not paused at all
            # when the first one took the paused steps' time.
            GC.start(full_mark: true, immediate_sweep: true)
            if clock < round.park_deadline
              pause.start(errors)
              GC.start(full_mark: true, immediate_sweep: true)
              gc_stat = GC.stat
            end
          end
          if @malloc_info
            round.step('malloc', round.park_deadline) do
              measured = @malloc_info.measure
              records = @allocation_sites&.records
              measured = false if records.nil? && @allocation_sites&.counts_records?
            end
          end
          round.step('dump', round.park_deadline) { dump = pause.dump(heap_file) }
          gc_after_dump = GC.count
          # A held round's dump is a String until written (a parked one went into `f`).
          written = !dump.is_a?(String)
          if !written && @writer
            # Before the check, which would scan the buffer's text for pointers otherwise.
            round.step('write', round.park_deadline) do
              @writer.write(heap_file.fileno, dump)
              written = true
            rescue IOError, SystemCallError => e
              # IO#write tries again once the program runs, from the start of the file.
              errors << "writing the heap dump with the program paused failed (#{e.message}): written after"
              heap_file.rewind
              heap_file.truncate(0)
            end
            pause.release_buffer if written
          end
          round.step('lsan', round.park_deadline) { lsan_check(errors) } if @backend == 'lsan'
          round.step('counts', round.park_deadline) { @inventory.copy_counts }
          if Constants.listable?(gc_after_dump)
            round.step('constants', round.park_deadline) { |deadline| constants = Constants.list(deadline) }
          end
          pause.stop
          @allocation_sites&.round_resumed
          unless written
            heap_file.write(dump)
            round.record('write')
          end
          @dump_bytes = heap_file.pos if round.done?('dump')
        ensure
          pause.stop
          @allocation_sites&.round_resumed
          pause.release_buffer
        end
      end
      malloc = measured ? @malloc_info.read : nil
      # The held round's buffer was malloc'd when malloc was measured, and is not in the dump
      # (objspace leaves its output String out): leakhunt takes it off.
      malloc[:held_buffer] = pause.buffer_bytes if malloc && pause.buffer_bytes.positive?
      # objspace's allocation records, when counted: leakhunt's, and not in the dump.
      malloc[:records], malloc[:record_bytes] = records if malloc && records
      round.overruns.each { |step, seconds| round.tell_overrun(step, seconds) }
      raise "no heap dump: #{round.skipped.join(', ')} skipped" unless round.done?('dump')

      body = { leakhunt_agent: SIDECAR_SCHEMA, snapshot: index, reason: reason, t: started, pid: Process.pid,
               ppid: @ppid, forked: @forked,
               ruby: { version: RUBY_VERSION, engine: RUBY_ENGINE, platform: RUBY_PLATFORM,
                       description: RUBY_DESCRIPTION },
               gc_stat: gc_stat, heap_dump: heap }
      body[:pause] = pause.mode if pause&.mode
      body[:malloc] = malloc if malloc
      body.merge!(@inventory.to_sidecar(mapped_libraries))
      body[:extensions] = @extensions.to_sidecar
      body[:loaded_features] = $LOADED_FEATURES.map(&:to_s)
      body[:constants] = constants if constants
      body[:frame_sites] = @frame_sites.stats if @frame_sites
      round.record('sidecar')
      body[:timings] = round.timings
      body[:errors] = @errors + errors + round.overruns.map { |step, s| format('%s overran its %.1f s budget', step, s) }
      write_private(File.join(@bundle, sidecar), Json.dump(body))
    ensure
      heap_file&.close
    end

    # Whether every C call of a round's paused steps keeps the GVL (see `Pause`).
    def can_hold?
      (@lsan.nil? || @lsan.holds_gvl?) && (@malloc_info.nil? || @malloc_info.holds_gvl?)
    end

    def lsan_check(errors)
      if @lsan.nil?
        errors << "LeakSanitizer check not run: #{@lsan_error}"
        return
      end
      @lsan.check
    rescue StandardError, ScriptError => e
      errors << "LeakSanitizer check failed (is liblsan preloaded?): #{e.class}: #{e.message}"
    end

    # The LSan bridge, made when the agent starts (never during a round).
    def prepare_lsan
      return unless @backend == 'lsan'

      @lsan = Lsan.new
    rescue StandardError, ScriptError => e
      @lsan_error = "#{e.class}: #{e.message}"
    end

    def write_private(path, text)
      tmp = "#{path}.tmp"
      File.open(tmp, File::WRONLY | File::CREAT | File::TRUNC, 0o600) { |f| f.write(text) }
      File.rename(tmp, path)
    end

    # Files of loaded shared libraries, from /proc/self/maps. Elsewhere (macOS) leakhunt fills
    # in the libraries' paths from the images its native tool lists.
    def mapped_libraries
      return [] unless File.readable?('/proc/self/maps')

      File.foreach('/proc/self/maps').filter_map { |l| l.split(' ', 6)[5]&.strip }.select { |p| p.start_with?('/') }.uniq
    rescue StandardError, ScriptError
      []
    end

    # "libzmq.so.5" => "/usr/lib/x86_64-linux-gnu/libzmq.so.5.2.4" (the loaded file).
    def resolve_library(name, maps)
      return nil if name.nil? || name.empty? || name.start_with?('[')
      return (File.realpath(name) rescue name) if name.start_with?('/')

      base = File.basename(name)
      candidates = [base]
      candidates << "lib#{base}" unless base.start_with?('lib')
      maps.find do |path|
        file = File.basename(path)
        candidates.any? { |c| file == c || file.start_with?("#{c}.") }
      end
    end

    def exit_detail(error)
      case error
      when nil then 'end'
      when SystemExit then "exit #{error.status}"
      when Interrupt then 'interrupt'
      when SignalException then "signal #{error.signm}"
      else "exception #{error.class}"
      end.gsub(/\s+/, ' ')
    end

    # Tells leakhunt the process is ending and waits for its final snapshot (bounded by
    # LEAKHUNT_EXIT_WAIT): always in a started process, in a forked one only once it has taken
    # a snapshot (so a short-lived fork never waits). A fork whose agent did not re-arm (its pid
    # is not the agent's) says nothing.
    def at_exit_hook
      return unless Process.pid == @pid && @conn

      detail = exit_detail($!)
      deadline = clock + @exit_wait
      @lock.synchronize do
        @exiting = true
        reply("exiting #{detail}")
        next if @forked && @taken.zero?

        @cond.wait(@lock, [deadline - clock, 0.1].min) while !@released && clock < deadline
      end
    rescue Exception # rubocop:disable Lint/RescueException -- never change how the program ends
      nil
    end
  end
end

LeakhuntAgent.start
