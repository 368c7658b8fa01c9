# SPDX-License-Identifier: GPL-2.0-or-later
# bench/ratios.gp: bar chart of the ratios ploop/overlay2 and ploop/vfs.
# gnuplot -e "dat='ratios.dat'; out='latest.png'" bench/ratios.gp
# dat: one line per figure: "label" ploop/overlay2 ploop/vfs target (NaN if none)
set terminal pngcairo size 900,480 font ",10"
set output out
set title "ploop-graphdriver: ratio of medians ploop / baseline (make bench)"
set ylabel "ratio (times; dd: throughput, higher is better)"
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set xrange [-1:*]
set key outside top center horizontal
set xtics scale 0
set offsets 0, 0, graph 0.08, 0
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "#444444"
plot dat using (3 * $0):2 with boxes lc rgb "#1f77b4" title "ploop / overlay2", \
     dat using (3 * $0 + 1):3 with boxes lc rgb "#ff7f0e" title "ploop / vfs", \
     dat using (3 * $0 + 0.5):(0):xtic(1) with points pt -1 notitle, \
     dat using (3 * $0):4:(0.7) with xerrorbars pt -1 lw 3 lc rgb "#d62728" title "target (vs overlay2)", \
     dat using (3 * $0):2:(sprintf("%.2f", $2)) with labels offset 0,0.7 notitle, \
     dat using (3 * $0 + 1):3:(sprintf("%.2f", $3)) with labels offset 0,0.7 notitle
